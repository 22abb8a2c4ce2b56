// An operator works an incident from weir's dashboard in Debian's headless
// Chromium (playwright-core), 1280 px wide: reads the waiting badges, types a
// filter for one step's failures, opens a failed job, follows its link to the
// record and back, opens the step's other jobs, releases a held step, sees a
// new failure arrive in the list pushed by the server (no reload, no poll),
// and types a bad filter (its error beside the box, the rest as it was).
// Keeps a screenshot of each step.
//
// usage: node incident.mjs URL TOKEN SCREENSHOT_DIR HELD DELAYED SCHEDULED SLOT BUSY
// prints one JSON object on stdout: what the page showed at each step. On a
// failure it prints what the page said before exiting non-zero.
import { explain, launch, watch } from "./chromium.mjs";

const [url, token, shots, held, delayed, scheduled, slot, busy] = process.argv.slice(2);
const browser = await launch();
const errors = [];
const failedRequests = [];
let page;
// The API as another client (not the page): what the server has.
async function call(method, path, body) {
  const r = await fetch(new URL(path, url), {
    method, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
  return r.json();
}
const sleep = ms => new Promise(r => setTimeout(r, ms));
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  watch(page, errors, failedRequests);
  const timeout = 30000;
  const shot = name => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  const widths = {};
  const width = async name => { widths[name] = await page.evaluate(() => document.documentElement.scrollWidth); };
  await page.goto(url);
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await page.waitForSelector("body[data-loaded=true][data-live=true]", { timeout });
  const row = id => `#jobs tr[data-job="${id}"]`;

  // 1. The list comes first, and waiting jobs say how they wait.
  const badges = {};
  for (const [name, id] of Object.entries({ held, delayed, scheduled, slot })) {
    await page.waitForSelector(`${row(id)} .badge`, { timeout });
    badges[name] = await page.getAttribute(`${row(id)} .badge`, "data-waiting");
  }
  await width("jobs");
  await shot("incident-1-waiting");

  // 2. One step's failures, typed into the filter box.
  await page.fill("#filter", "step eq 'charge' and status eq 'Failed'");
  await page.click("#apply");
  await page.waitForFunction(() => document.querySelector("#page-info")?.textContent === "1–2 of 2", null, { timeout });
  const failures = await page.locator("#jobs tr[data-job]").evaluateAll(rows => rows.map(r => r.dataset.job));
  const filterUrl = page.url();
  await shot("incident-2-failures");

  // 3. Open one failed job from its row.
  await page.click(`${row(failures[0])} a.job-id`);
  await page.waitForSelector("#job-record-link", { timeout });
  const job = {
    recordLink: await page.getAttribute("#job-record-link", "href"),
    stepLink: await page.getAttribute("#job-step-link", "href"),
    correlationLink: await page.getAttribute("#job-correlation-link", "href"),
  };
  await width("job");
  await shot("incident-3-job");

  // 4. Its record, the jobs about it, and back.
  await page.click("#job-record-link");
  await page.waitForSelector(`#record-jobs tr[data-job="${failures[0]}"]`, { timeout });
  await page.waitForFunction(() => (document.querySelector("#record-json")?.textContent || "").includes("\"id\""), null, { timeout });
  const record = {
    json: await page.textContent("#record-json"),
    jobs: await page.locator("#record-jobs tr[data-job]").evaluateAll(rows => rows.map(r => r.dataset.job)),
    backLink: await page.getAttribute("#record-back", "href"),
  };
  await width("record");
  await shot("incident-4-record");
  await page.goBack();
  await page.waitForFunction(id => document.querySelector("#job-id")?.textContent === id, failures[0], { timeout });
  const back = await page.textContent("#job-id");
  // The step's other jobs: the list, filtered by the step.
  await page.click("#job-step-link");
  await page.waitForSelector("#jobs tr[data-job]", { timeout });
  const stepList = await page.inputValue("#filter");

  // 5. Release the held step from the Overview.
  await page.click("#tab-overview");
  await page.waitForSelector('#held tr[data-step="welcome"] button.release', { timeout });
  await width("overview");
  await page.click('#held tr[data-step="welcome"] button.release');
  await page.waitForSelector('#held tr[data-step="welcome"]', { state: "detached", timeout });
  const released = await page.textContent("#message");
  await shot("incident-5-released");

  // 6. A new failure arrives pushed by the server: no reload, no poll. First
  // everything settles (the released job runs), then a quiet spell in
  // which the page asks for nothing, then the failure.
  for (let i = 0; ; i++) {
    const done = await call("GET", `/api/jobs/${held}`);
    if (done.status === "Succeeded") break;
    if (i > 300) throw new Error(`the released job did not run: ${JSON.stringify(done)}`);
    await sleep(100);
  }
  await page.click("#tab-jobs");
  await page.fill("#filter", "step eq 'charge'");
  await page.click("#apply");
  await page.waitForFunction(() => document.querySelector("#page-info")?.textContent === "1–2 of 2", null, { timeout });
  await sleep(2500);
  let navigations = 0;
  let listRequests = 0;
  page.on("framenavigated", f => { if (f === page.mainFrame()) navigations++; });
  page.on("request", r => { if (new URL(r.url()).pathname === "/api/jobs") listRequests++; });
  await sleep(5000);
  const listRequestsWhileQuiet = listRequests;
  const created = await call("POST", "/api/data/opportunity", { name: "deal 3", amount: 3 });
  if (!created.id) throw new Error(`the new opportunity was refused: ${JSON.stringify(created)}`);
  await page.waitForFunction(() => document.querySelector("#page-info")?.textContent === "1–3 of 3", null, { timeout });
  await page.waitForFunction(() => document.querySelector("#jobs tr[data-job] .job-status")?.textContent === "Failed", null, { timeout });
  const newRow = await page.locator("#jobs tr[data-job]").first().getAttribute("data-job");
  const pushed = { newRow, listRequestsWhileQuiet, navigations, live: await page.getAttribute("body", "data-live") };
  await shot("incident-6-pushed");

  // 7. A bad filter: its error beside the box, the list and the summary as they were.
  const rowsBefore = await page.locator("#jobs tr[data-job]").evaluateAll(rows => rows.map(r => r.dataset.job));
  const summaryBefore = await page.textContent("#summary");
  await page.fill("#filter", "step eq");
  await page.click("#apply");
  await page.waitForFunction(() => (document.querySelector("#filter-error")?.textContent || "") !== "", null, { timeout });
  const badFilter = {
    error: await page.textContent("#filter-error"),
    invalid: await page.getAttribute("#filter", "aria-invalid"),
    beside: await page.evaluate(() => document.querySelector("#filter-error").parentElement === document.querySelector("#filter").parentElement),
    rowsBefore, rowsAfter: await page.locator("#jobs tr[data-job]").evaluateAll(rows => rows.map(r => r.dataset.job)),
    summaryBefore, summaryAfter: await page.textContent("#summary"),
  };
  await shot("incident-7-bad-filter");

  // 8. The nodes: this server, live, and one gone with the job it holds (its lease end).
  await page.click("#tab-nodes");
  const gonePath = '#nodes tr[data-node="gone-node"]';
  await page.waitForSelector(`${gonePath} a.job-id[href="/jobs/${busy}"]`, { timeout });
  const gone = {
    state: await page.textContent(`${gonePath} td.state`),
    jobs: await page.locator(`${gonePath} a.job-id`).allTextContents(),
    workers: (await page.textContent(`${gonePath} td.workers`)).trim(),
  };
  await width("nodes");
  await page.click("#tab-queues");
  await page.waitForSelector("#queues tr[data-queue]", { timeout });
  await width("queues");
  await page.click("#tab-nodes");
  await shot("incident-8-nodes");
  console.log(JSON.stringify({ errors, badges, failures, filterUrl, job, record, back, stepList, released, pushed, badFilter, gone, widths }));
} catch (e) {
  await explain(e, page, { message: "#message", statusLine: "#status-line", filterError: "#filter-error" }, errors, failedRequests);
  process.exitCode = 1;
} finally {
  await browser.close();
}
