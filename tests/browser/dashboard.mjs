// Drives weir's dashboard in Debian's headless Chromium with playwright-core:
// loads the page, reads the figures it shows, clicks an action on one job and
// waits for the page to show the result, then keeps a screenshot.
//
// usage: node dashboard.mjs URL TOKEN JOB_ID ACTION EXPECTED_STATUS SCREENSHOT
// prints one JSON object on stdout.
import { chromium } from "playwright-core";

const [url, token, jobId, action, expected, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  await page.goto(url);
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await page.waitForSelector("body[data-loaded=true]", { timeout: 60000 });
  await page.waitForSelector(`tr[data-job="${jobId}"] button[data-action="${action}"]`, { timeout: 60000 });
  const read = id => page.textContent("#" + id);
  const counts = {};
  for (const s of ["WaitingForResources", "InProgress", "Waiting", "Paused", "Succeeded", "Failed", "Canceled"]) {
    counts[s] = Number(await read("count-" + s));
  }
  const shown = { counts, failureRate: await read("failure-rate"), backlog: Number(await read("backlog")),
                  failures: await page.locator("#failures tr").count(), chart: await page.locator("#throughput").count() };
  await page.click(`tr[data-job="${jobId}"] button[data-action="${action}"]`);
  await page.waitForFunction(([id, status]) => {
    const cell = document.querySelector(`tr[data-job="${id}"] .job-status`);
    return cell && cell.textContent === status;
  }, [jobId, expected], { timeout: 60000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ shown, errors, clicked: expected }));
} finally {
  await browser.close();
}
