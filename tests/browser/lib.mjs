// What cms.mjs, demo.mjs and kit.mjs share: the `ok - …` / `# step` / `FAILED: …` output,
// checks, the watchdog for the whole run, Chromium's launch and what is kept on failure.
//
// Environment: CHROMIUM (default /usr/bin/chromium); LEVEE_BROWSER_ARTIFACTS (a folder for
// screenshots on failure).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
/** Different in each run: for slugs, titles and emails. */
export const unique = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

/** The value of an environment variable; exits 2 with `FAILED: …` if it is not set. */
export function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`FAILED: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

let currentStep = 'starting';
let started = null;

/** From now on `ok` also prints the seconds since this call. */
export function timeChecks() {
  started = Date.now();
}
export function ok(what) {
  if (started === null) {
    console.log(`ok - ${what}`);
  } else {
    console.log(`ok - ${what} [${((Date.now() - started) / 1000).toFixed(1)} s]`);
  }
}
export function check(condition, what) {
  if (!condition) {
    throw new Error(what);
  }
}
export async function step(name, run) {
  currentStep = name;
  console.log(`# ${name}`);
  return run();
}

/** Exits 1 with `FAILED: …` if the run takes over `ms`. */
export function watchdog(ms) {
  const timer = setTimeout(() => {
    console.error(`FAILED: ${currentStep}: the run took over ${ms / 1000} s`);
    process.exit(1);
  }, ms);
  timer.unref();
}

/** Chromium, headless. */
export function launch(timeout) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout,
  });
}

/** Chromium as a step of its own, with `ok` once it runs. */
export async function launchStep(timeout) {
  const browser = await step(`launch ${executablePath}`, () => launch(timeout));
  ok(`Chromium ${browser.version()} started`);
  return browser;
}

/**
 * A browser context waiting up to `wait` for anything; the JavaScript errors of its pages
 * go to `pageErrors` as `URL: message`.
 */
export async function newContext(browser, wait, pageErrors, options) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(wait);
  context.setDefaultNavigationTimeout(wait);
  context.on('page', (p) => p.on('pageerror', (e) => pageErrors.push(`${p.url()}: ${e.message}`)));
  return context;
}

/** The last check of a run: no page had a JavaScript error. */
export function noPageErrors(pageErrors) {
  check(pageErrors.length === 0, `JavaScript errors in the pages: ${pageErrors.join('; ')}`);
  ok('no JavaScript errors in any page');
}

/**
 * On the first failure: `FAILED: step: why`, the JavaScript errors seen (after `label`),
 * and exit code 1.
 */
export function failed(error, pageErrors, label = 'JavaScript errors in the pages') {
  console.error(`FAILED: ${currentStep}: ${error && error.message ? error.message : error}`);
  if (pageErrors.length) {
    console.error(`${label}: ${pageErrors.join('; ')}`);
  }
  process.exitCode = 1;
}

/** A screenshot of `page` as LEVEE_BROWSER_ARTIFACTS/`name`; returns its path, or null without the folder. */
export async function screenshot(page, name, options = {}) {
  const dir = process.env.LEVEE_BROWSER_ARTIFACTS;
  if (!dir) {
    return null;
  }
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  await page.screenshot({ path: file, ...options, timeout: 5_000 });
  return file;
}

/** Lists the open pages of `context` and keeps a screenshot of each as `{prefix}{i}.png`. */
export async function keepPages(context, prefix) {
  for (const [i, p] of (context ? context.pages() : []).entries()) {
    console.error(`  page ${i}: ${p.url()}`);
    try {
      const file = await screenshot(p, `${prefix}${i}.png`, { fullPage: true });
      if (file) {
        console.error(`  screenshot: ${file}`);
      }
    } catch (shot) {
      console.error(`  (no screenshot: ${shot.message})`);
    }
  }
}
