import { KeyRound } from "lucide-react";
import { Link } from "react-router-dom";
import type { Refusal } from "../lib/providers";

/** Says why a job was refused for want of a model, and where a key goes (or whom to ask). */
export function RefusalBanner({ refusal, admin }: { refusal: Refusal; admin: boolean }) {
  return (
    <div role="note" aria-label="Why this job was refused" className="flex gap-2 rounded-md border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-950">
      <KeyRound aria-hidden="true" className="mt-0.5 h-4 w-4 shrink-0" />
      <p>
        {refusal === "no-model"
          ? "This job was refused because no AI model is configured: the built-in scripted model only does the demo jobs. "
          : "This job was refused because no key is set for the provider of a model it needs. "}
        {admin ? (
          <>
            Add a provider&apos;s key in{" "}
            <Link to="/settings#model-providers" className="font-medium text-indigo-800 underline">
              Settings → Model providers
            </Link>{" "}
            (it takes effect at once, no restart; one provider&apos;s key is enough), then retry the job.
          </>
        ) : (
          "Ask an admin to add a model provider's key in Settings (one is enough), then retry the job."
        )}
      </p>
    </div>
  );
}
