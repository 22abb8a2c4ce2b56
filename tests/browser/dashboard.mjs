// Drives weir's dashboard in Debian's headless Chromium with playwright-core,
// as an operator would: reads the figures, pauses one job, filters the list,
// groups it, deletes jobs in bulk (with the confirmation), then opens a failed
// job's page. Keeps a screenshot of the overview and of the job page.
//
// usage: node dashboard.mjs URL TOKEN PAUSE_JOB FAILED_JOB SCREENSHOT_DIR READER_TOKEN
// prints one JSON object on stdout: what the page showed at each step. On a
// failure it prints what the page said (its message line, the network errors)
// before exiting non-zero, so a failed run explains itself.
import { explain, launch, watch } from "./chromium.mjs";

const [url, token, pauseJob, failedJob, shots, readerToken] = process.argv.slice(2);
const browser = await launch();
const errors = [];
const failedRequests = [];
let page;
try {
  page = await browser.newPage({ viewport: { width: 1400, height: 1200 } });
  watch(page, errors, failedRequests);
  const timeout = 30000;
  await page.goto(url);
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await page.waitForSelector("body[data-loaded=true]", { timeout });
  const row = id => `tr[data-job="${id}"]`;
  await page.waitForSelector(`${row(pauseJob)} button[data-action="pause"]`, { timeout });

  // 1. The figures (on the Overview), and full job ids that link to the job's page (the Jobs list).
  const read = id => page.textContent("#" + id);
  await page.click("#tab-overview");
  await page.waitForSelector("#view-overview[data-painted=true] #plugin-jobs tr", { timeout });
  const counts = {};
  for (const s of ["WaitingForResources", "InProgress", "Waiting", "Paused", "Succeeded", "Failed", "Canceled"]) {
    counts[s] = Number(await read("count-" + s));
  }
  const shown = {
    counts, failureRate: await read("failure-rate"), backlog: Number(await read("backlog")),
    failures: await page.locator("#failures tr").count(), chart: await page.locator("#throughput").count(),
    schedules: await page.locator("#schedules tr").allTextContents(),
    pluginJobs: await page.locator("#plugin-jobs tr").evaluateAll(rows => rows.map(r => ({
      plugin: r.dataset.plugin, succeeded: Number(r.querySelector(".ok").textContent), failed: Number(r.querySelector(".bad").textContent) }))),
  };
  await page.click("#tab-jobs");
  await page.waitForSelector(`${row(pauseJob)} button[data-action="pause"]`, { timeout });
  Object.assign(shown, {
    idText: await page.textContent(`${row(pauseJob)} a.job-id`),
    idLink: await page.getAttribute(`${row(pauseJob)} a.job-id`, "href"),
  });

  // 2. Pause one job: the API answers, the row shows the new status.
  const [paused] = await Promise.all([
    page.waitForResponse(r => r.url().endsWith(`/api/jobs/${pauseJob}/pause`), { timeout }),
    page.click(`${row(pauseJob)} button[data-action="pause"]`),
  ]);
  if (paused.status() !== 200) throw new Error(`pause answered ${paused.status()}: ${await paused.text()}`);
  await page.waitForFunction(([sel]) => document.querySelector(sel)?.textContent === "Paused",
    [`${row(pauseJob)} .job-status`], { timeout });
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // 2b. Give the paused job priority 2 with its row's priority action.
  await page.selectOption("#priority-level", "2");
  const [reprioritized] = await Promise.all([
    page.waitForResponse(r => r.url().endsWith(`/api/jobs/${pauseJob}/priority`), { timeout }),
    page.click(`${row(pauseJob)} button[data-action="priority"]`),
  ]);
  const priorityAnswer = await reprioritized.json();
  await page.waitForFunction(([sel]) => /· 2$/.test(document.querySelector(sel)?.textContent || ""),
    [`${row(pauseJob)} td:nth-child(4)`], { timeout });
  const priorityCell = await page.textContent(`${row(pauseJob)} td:nth-child(4)`);

  // 3. Filter: only the failed job is listed, and the pager says so.
  await page.fill("#filter", "status eq 'Failed'");
  await page.click("#apply");
  await page.waitForFunction(() => document.querySelector("#page-info")?.textContent === "1–1 of 1", null, { timeout });
  const filtered = await page.locator("#jobs tr[data-job]").evaluateAll(rows => rows.map(r => r.dataset.job));
  const sharedUrl = page.url();

  // 4. Group the notify jobs by plug-in.
  await page.fill("#filter", "plugin eq 'notify'");
  await page.click("#apply");
  await page.selectOption("#group-by", "plugin");
  await page.waitForSelector("#groups tr[data-group=notify]", { timeout });
  const group = await page.textContent("#groups tr[data-group=notify]");

  // 5. Bulk delete of the succeeded notify jobs: counted, confirmed, done.
  await page.selectOption("#group-by", "");
  await page.fill("#filter", "plugin eq 'notify' and status eq 'Succeeded'");
  await page.click("#apply");
  await page.selectOption("#bulk-action", "delete");
  await page.click("#bulk-preview");
  await page.waitForSelector("#bulk-confirm.shown", { timeout });
  const question = await page.textContent("#bulk-question");
  await page.click("#bulk-yes");
  await page.waitForFunction(() => /changed/.test(document.querySelector("#message")?.textContent || ""), null, { timeout });
  const bulkMessage = await page.textContent("#message");
  await page.waitForFunction(() => document.querySelector("#page-info")?.textContent === "no jobs match", null, { timeout });

  // The queues panel, and a held step released with its button; who is
  // signed in, and the audit log an admin sees (the pause above is in it).
  await page.goto(new URL("/?view=overview", url).href);
  await page.waitForSelector('#audit tr[data-audit]', { timeout });
  const whoami = await page.textContent("#whoami");
  const audited = await page.locator("#audit tr[data-audit]").allTextContents();
  await page.click("#tab-queues");
  await page.waitForSelector("#queues tr[data-queue]", { timeout });
  const queues = await page.locator("#queues tr[data-queue]").evaluateAll(rows => rows.map(r => r.dataset.queue));
  await page.click("#tab-overview");
  await page.waitForSelector('#held tr[data-step="new-year"] button.release', { timeout });
  await page.click('#held tr[data-step="new-year"] button.release');
  await page.waitForSelector('#held tr[data-step="new-year"]', { state: "detached", timeout });
  const released = await page.locator("#message").textContent();

  // 6. The failed job's page, opened from its link as an operator would share it.
  await page.goto(new URL(`/jobs/${failedJob}`, url).href);
  await page.waitForSelector("body[data-loaded=true]", { timeout });
  await page.waitForSelector("#history tr.attempt", { timeout });
  const job = {
    id: await read("job-id"),
    status: await read("job-status"),
    error: await read("job-error"),
    attempts: await read("job-attempts"),
    input: await read("job-input"),
    history: await page.locator("#history tr.attempt").evaluateAll(rows => rows.map(r => ({
      number: Number(r.dataset.attempt),
      outcome: r.querySelector(".outcome").textContent,
      error: r.querySelector(".err").textContent,
    }))),
    actions: await page.locator("#job-actions button").allTextContents(),
    // The input carries markup: it must show as text, never run.
    markupInert: await page.evaluate(() => window.__xss === undefined && document.querySelectorAll("main img").length === 0),
  };
  await page.screenshot({ path: `${shots}/job.png`, fullPage: true });

  // 7. Signed in as a reader: who it is, and no buttons its role cannot use.
  await page.goto(url);
  await page.fill("#token", readerToken);
  await page.dispatchEvent("#token", "change");
  await page.waitForFunction(() => /reader/.test(document.querySelector("#whoami")?.textContent || ""), null, { timeout });
  await page.waitForSelector(`${row(pauseJob)}`, { timeout });
  const reader = {
    whoami: await read("whoami"),
    actionButtons: await page.locator("#jobs button.action").count(),
    bulkHidden: await page.locator("#bulk-toolbar.hidden").count(),
    auditHidden: await page.locator("#audit-panel.hidden").count(),
  };
  console.log(JSON.stringify({ shown, errors, filtered, sharedUrl, group, question, bulkMessage, job, queues, released, priorityAnswer: priorityAnswer.priority, priorityCell, whoami, audited, reader }));
} catch (e) {
  await explain(e, page, { message: "#message", statusLine: "#status-line" }, errors, failedRequests);
  process.exitCode = 1;
} finally {
  await browser.close();
}
