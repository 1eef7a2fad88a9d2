// Opens Stowage's storage dashboard in headless Chromium (Debian's, driven by playwright-core)
// for tests/tests/dashboard.rs, and reports what the page shows as one JSON line on stdout.
//
//   node check.cjs URL TOKEN SCREENSHOT.png
//
// With a token, it waits for the page's second poll, prints `READY`, and waits for a line on
// stdin (the test deploys in between), then for two more polls; it then reads the
// repositories table, the summary tiles and the charts (the pixels each chart painted in its
// first series' colour), takes a full-page screenshot, and prints the report. Without a
// token it reports the status of the page alone. CHROMIUM names the browser (default
// /usr/bin/chromium).
"use strict";

const { chromium } = require("playwright-core");
const readline = require("node:readline");

const [url, token, screenshot] = process.argv.slice(2);

function nextLine() {
  const rl = readline.createInterface({ input: process.stdin });
  return new Promise((resolve) => rl.once("line", (line) => {
    rl.close();
    process.stdin.destroy(); // nothing more is read: let the process end
    resolve(line);
  }));
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // As root, without a sandbox; no background connections (the machine has no network).
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const context = await browser.newContext({
      viewport: { width: 1280, height: 1000 },
      extraHTTPHeaders: token ? { Authorization: `Bearer ${token}` } : {},
    });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    const response = await page.goto(url);
    const report = { status: response.status(), headers: response.headers(), errors };
    if (report.status === 200) {
      const polls = (n) => page.waitForFunction(
        (n) => document.body.dataset.ready === "true" && Number(document.body.dataset.polls) >= n,
        n, { timeout: 30000 });
      await polls(2);
      console.log("READY");
      await nextLine();
      const now = await page.evaluate(() => Number(document.body.dataset.polls));
      await polls(now + 2);
      report.statusText = await page.textContent("#status");
      report.repositories = await page.$$eval("#repositories tbody tr", (rows) => rows.map((r) => ({
        repoKey: r.dataset.repo,
        files: Number(r.dataset.files),
        bytes: Number(r.dataset.bytes),
        shown: r.cells[3].textContent,
      })));
      report.summary = await page.$$eval("#summary dd", (dds) =>
        Object.fromEntries(dds.map((d) => [d.id, d.textContent])));
      report.series = await page.evaluate(() => window.stowageDashboard.series);
      report.charts = await page.$$eval(".chart", (charts) => charts.map((chart) => {
        const canvas = chart.querySelector("canvas");
        if (!canvas) return { id: chart.id, painted: 0 };
        // The first series' stroke, as uPlot drew it.
        const stroke = chart.querySelector(".u-legend .u-series:nth-child(2) .u-marker");
        const rgb = stroke ? getComputedStyle(stroke).borderColor.match(/\d+/g).map(Number) : null;
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (rgb && Math.abs(data[i] - rgb[0]) < 8 && Math.abs(data[i + 1] - rgb[1]) < 8
            && Math.abs(data[i + 2] - rgb[2]) < 8 && data[i + 3] > 200) painted += 1;
        }
        return { id: chart.id, width: canvas.width, height: canvas.height, painted, rgb };
      }));
      await page.screenshot({ path: screenshot, fullPage: true });
    }
    console.log(JSON.stringify(report));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
