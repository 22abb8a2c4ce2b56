// What the browser tests share: Debian's headless Chromium, launched as they
// need it, and a page's script errors and refused requests, kept to explain
// a failure.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
}

// Keeps `page`'s script errors in `errors` and its answers of 400 and above in `failedRequests`.
export function watch(page, errors, failedRequests) {
  page.on("pageerror", e => errors.push(String(e)));
  page.on("response", async r => {
    if (r.status() >= 400) failedRequests.push(`${r.request().method()} ${r.url()} -> ${r.status()} ${await r.text().catch(() => "")}`);
  });
}

// Prints on stderr why a walk failed: the error, what the page said (the text
// of `selectors` by name), its script errors and refused requests.
export async function explain(e, page, selectors, errors, failedRequests) {
  const said = {};
  if (page) {
    for (const [name, sel] of Object.entries(selectors)) said[name] = await page.textContent(sel).catch(() => null);
    said.url = page.url();
  }
  console.error(JSON.stringify({ failure: String(e), said, errors, failedRequests }, null, 1));
}
