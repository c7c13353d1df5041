// The admin UI and a reader's page in a real browser (Debian's Chromium, driven by
// playwright-core) against a running `levee serve`:
//
//   /admin → login → new blog → post with Markdown → Preview (new tab) → Save
//   → /blogs/{slug}/latest.json has it → /poll.html (polls latest.json every 500 ms)
//   shows a second post saved from another tab.
//
// Run by crates/levee/tests/browser.rs, which starts levee and puts poll.html in its store.
// By hand: LEVEE_URL=http://127.0.0.1:8080 LEVEE_ADMIN_PASSWORD=… node tests/browser/cms.mjs
//
// Environment: LEVEE_URL, LEVEE_ADMIN_PASSWORD (required); LEVEE_BLOG_SLUG (default: a new
// unique slug); CHROMIUM (default /usr/bin/chromium); LEVEE_BROWSER_ARTIFACTS (a folder for
// a screenshot of each open page on failure).
// Prints `ok - …` for each check; exits 1 with `FAILED: …` on the first that fails.

import { check, failed, keepPages, launchStep, newContext, noPageErrors, ok, required, step, unique, watchdog } from './lib.mjs';

const WAIT = 30_000; // for any one page, element or publish
const WHOLE_RUN = 240_000;

const base = required('LEVEE_URL').replace(/\/+$/, '');
const password = required('LEVEE_ADMIN_PASSWORD');
const slug = process.env.LEVEE_BLOG_SLUG || `e2e-${unique}`;

/** latest.json as a reader gets it: null while it is not published yet. */
async function latest() {
  const response = await fetch(`${base}/blogs/${slug}/latest.json`, { cache: 'no-store' });
  if (response.status === 404) {
    return null;
  }
  check(response.ok, `GET /blogs/${slug}/latest.json: HTTP ${response.status}`);
  return response.json();
}

/** Poll latest.json until `test` holds for it; returns it. */
async function latestUntil(what, test) {
  const deadline = Date.now() + WAIT;
  let last = null;
  for (;;) {
    last = await latest();
    if (last && test(last)) {
      return last;
    }
    if (Date.now() > deadline) {
      throw new Error(`latest.json never had ${what} within ${WAIT / 1000} s; last: ${JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/**
 * After a form post: wait until `expected` shows, or the page's error message (the admin
 * UI's `p.error`), and fail with that message.
 */
async function landed(page, expected, what) {
  const error = page.locator('p.error');
  await expected.or(error).first().waitFor({ timeout: WAIT });
  if ((await error.count()) > 0) {
    throw new Error(`${what} answered ${JSON.stringify(await error.first().innerText())} at ${page.url()}`);
  }
}

/** Fill the post form on a blog's admin page and Save; waits for the post in the list. */
async function savePost(page, title, markdown) {
  await page.fill('#post-title', title);
  await page.fill('#post-body', markdown);
  await page.click('#save');
  await landed(page, page.locator('table a', { hasText: title }), 'Save');
  check(new URL(page.url()).pathname === `/admin/blogs/${slug}`, `after Save the page is ${page.url()}`);
}

watchdog(WHOLE_RUN);

let browser;
let context;
const pageErrors = [];
try {
  browser = await launchStep(WAIT);
  context = await newContext(browser, WAIT, pageErrors);
  const page = await context.newPage();

  await step('log in', async () => {
    await page.goto(`${base}/admin`);
    check(new URL(page.url()).pathname === '/admin/login', `/admin without a session went to ${page.url()}, not /admin/login`);
    ok('/admin without a session redirects to /admin/login');
    await page.fill('#name', 'admin');
    await page.fill('#password', password);
    await page.click('button[type=submit]');
    // The dashboard's header has the logout form; a failed login shows an error instead.
    await landed(page, page.locator('header form'), 'logging in');
    check(new URL(page.url()).pathname === '/admin', `after logging in the page is ${page.url()}, not /admin`);
    const header = await page.locator('header').innerText();
    check(header.includes('admin (admin)'), `the dashboard header does not name the admin: ${JSON.stringify(header)}`);
    ok('logged in as admin; the dashboard shows "admin (admin)"');
  });

  const blogTitle = `Browser test ${unique}`;
  await step(`create blog ${slug}`, async () => {
    await page.fill('#slug', slug);
    await page.fill('#title', blogTitle);
    await page.click('button:has-text("Create blog")');
    await landed(page, page.locator('h1', { hasText: blogTitle }), 'Create blog');
    check(new URL(page.url()).pathname === `/admin/blogs/${slug}`, `after Create blog the page is ${page.url()}`);
    const h1 = await page.locator('h1').innerText();
    check(h1 === blogTitle, `the blog page's heading is ${JSON.stringify(h1)}, not ${JSON.stringify(blogTitle)}`);
    ok(`blog created; /admin/blogs/${slug} shows "${blogTitle}"`);
  });

  const first = `First post ${unique}`;
  const markdown = `Written in **a real browser**, run ${unique}.\n\n- one\n- two\n`;
  await step('preview the first post', async () => {
    await page.fill('#post-title', first);
    await page.fill('#post-body', markdown);
    const [preview] = await Promise.all([context.waitForEvent('page'), page.click('#preview')]);
    await preview.waitForLoadState('domcontentloaded');
    const strong = await preview.locator('article strong').innerText();
    check(strong === 'a real browser', `the preview's <strong> is ${JSON.stringify(strong)}`);
    const items = await preview.locator('article li').allInnerTexts();
    check(items.join(',') === 'one,two', `the preview's list is ${JSON.stringify(items)}`);
    const heading = await preview.locator('article h1').innerText();
    check(heading === first, `the preview's heading is ${JSON.stringify(heading)}`);
    check((await preview.locator('.notice').innerText()).includes('not published'), 'the preview does not say "not published"');
    ok('Preview opened a new tab with the Markdown rendered (<strong>, <li>) and "not published"');
    await preview.close();
    const before = await latest();
    const titles = (before?.posts ?? []).map((p) => p.title);
    check(!titles.includes(first), `Preview published the post: latest.json has ${JSON.stringify(titles)}`);
    ok('Preview published nothing');
  });

  await step('save the first post', async () => {
    await savePost(page, first, markdown);
    ok('Save lists the post on the blog page');
    const published = await latestUntil(`"${first}"`, (l) => l.posts.some((p) => p.title === first));
    const post = published.posts.find((p) => p.title === first);
    check(post.body_html.includes('<strong>a real browser</strong>'), `body_html is ${JSON.stringify(post.body_html)}`);
    ok(`/blogs/${slug}/latest.json has "${first}" with body_html ${JSON.stringify(post.body_html)}`);
  });

  const second = `Second post ${unique}`;
  await step('a reader page sees a new post', async () => {
    const reader = await context.newPage();
    const response = await reader.goto(`${base}/poll.html?blog=${encodeURIComponent(slug)}`);
    check(response && response.ok(), `GET /poll.html: HTTP ${response && response.status()}`);
    const titles = reader.locator('#titles');
    await titles.getByText(first, { exact: true }).waitFor();
    ok(`/poll.html shows "${first}" (${await reader.locator('#status').innerText()})`);

    const editor = await context.newPage();
    await editor.goto(`${base}/admin/blogs/${slug}`);
    await savePost(editor, second, `Saved from a second tab, run ${unique}.`);
    ok(`"${second}" saved from a second tab`);

    await titles.getByText(second, { exact: true }).waitFor();
    const shown = await reader.locator('#titles li').allInnerTexts();
    check(shown.includes(first), `the reader page lost "${first}": ${JSON.stringify(shown)}`);
    ok(`/poll.html shows "${second}" without a reload: ${JSON.stringify(shown)} (${await reader.locator('#status').innerText()})`);
  });

  noPageErrors(pageErrors);
  console.log('all browser checks passed');
} catch (e) {
  failed(e, pageErrors);
  await keepPages(context, 'failure-page-');
} finally {
  if (browser) {
    await browser.close().catch(() => {});
  }
}
