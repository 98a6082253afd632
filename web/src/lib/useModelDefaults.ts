// What a new job gets unless it chooses otherwise (`GET /api/providers`), asked again every few
// seconds until the AI services have reported (they report once started, which may be after the
// page opened). Null while unknown: the page then says "the default" as before.
import { useEffect, useState } from "react";
import { api } from "../api/client";
import type { ModelDefaults } from "../api/types";

const AGAIN_MS = 3000;

export function useModelDefaults(): ModelDefaults | null {
  const [defaults, setDefaults] = useState<ModelDefaults | null>(null);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ask = () => {
      api.GET("/api/providers").then(
        ({ data }) => {
          if (stopped) return;
          if (data) setDefaults(data);
          if (!data?.reported_at) timer = setTimeout(ask, AGAIN_MS);
        },
        () => {
          if (!stopped) timer = setTimeout(ask, AGAIN_MS);
        },
      );
    };
    ask();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  return defaults;
}
