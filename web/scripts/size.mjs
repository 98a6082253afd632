// The dashboard's first-load size: the JS and CSS that index.html loads (lazy pages are not
// counted), raw and gzipped. Run after a build: `npm run size`.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const html = readFileSync(join(dist, "index.html"), "utf8");
const files = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
let raw = 0;
let gzipped = 0;
for (const file of files) {
  const data = readFileSync(join(dist, file));
  const packed = gzipSync(data, { level: 9 }).length;
  raw += data.length;
  gzipped += packed;
  console.log(`${file}: ${(data.length / 1024).toFixed(1)} KiB, gzipped ${(packed / 1024).toFixed(1)} KiB`);
}
console.log(`first load (JS + CSS): ${(raw / 1024).toFixed(1)} KiB, gzipped ${(gzipped / 1024).toFixed(1)} KiB`);
