// Drives a parent job's page in Debian's headless Chromium with playwright-core:
// the jobs it started are listed with their statuses and link to their pages, a
// child's page links back to its parent, and canceling the parent asks whether
// its unfinished children go too (accepted here). Keeps a screenshot.
//
// usage: node tree.mjs URL TOKEN PARENT_JOB SCREENSHOT_DIR
// prints one JSON object on stdout: what the pages showed.
import { launch } from "./chromium.mjs";

const [url, token, parent, shots] = process.argv.slice(2);
const browser = await launch();
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("pageerror", e => errors.push(String(e)));
  const timeout = 30000;
  await page.goto(url);
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await page.waitForSelector("body[data-loaded=true]", { timeout });
  await page.goto(new URL(`/jobs/${parent}`, url).href);
  await page.waitForSelector("#job-children tr.child", { timeout });
  const children = await page.locator("#job-children tr.child").evaluateAll(rows => rows.map(r => ({
    link: r.querySelector("a.job-id").getAttribute("href"), key: r.querySelector("code").textContent, status: r.lastElementChild.textContent })));
  await page.screenshot({ path: `${shots}/job-tree.png`, fullPage: true });
  // A child's page names its parent.
  await page.goto(new URL(children[0].link, url).href);
  await page.waitForSelector("#job-parent a.job-id", { timeout });
  const parentLink = await page.getAttribute("#job-parent a.job-id", "href");
  // Back on the parent: cancel, and say yes to the cascade.
  await page.goto(new URL(`/jobs/${parent}`, url).href);
  await page.waitForSelector('#job-actions button[data-action="cancel"]', { timeout });
  let question = null;
  page.once("dialog", d => { question = d.message(); d.accept(); });
  const [answer] = await Promise.all([
    page.waitForResponse(r => r.url().endsWith(`/api/jobs/${parent}/cancel`), { timeout }),
    page.click('#job-actions button[data-action="cancel"]'),
  ]);
  const sent = answer.request().postData();
  await page.waitForFunction(() => [...document.querySelectorAll("#job-children tr.child")].every(r => r.lastElementChild.textContent === "Canceled"), null, { timeout });
  console.log(JSON.stringify({ errors, children, parentLink, question, sent, status: answer.status() }));
} catch (e) {
  console.error(JSON.stringify({ failure: String(e), errors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
