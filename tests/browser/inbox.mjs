// The web inbox in a real browser: Debian's Chromium, headless, driven by
// playwright-core (tests/serve.rs starts flowc serve and a worker, submits
// three runs that wait at a gate, and runs this script; tests/setup.sh
// installs both). It logs in, approves one gate, rejects one with a reason,
// edits one with an invalid then a valid value (checking the problem shown
// beside its field), opens the run page, and takes screenshots. Every page
// it sees must be free of the canary secret. Prints a JSON summary.
//
// Environment: BASE (serve's URL), TOKEN, RUN_APPROVE, RUN_REJECT,
// RUN_EDIT, SHOTS (screenshot folder), PLAYWRIGHT (the folder holding
// node_modules/playwright-core), CANARY.
import { createRequire } from 'node:module';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env('BASE');
const SHOTS = env('SHOTS');
const CANARY = env('CANARY');
const require = createRequire(join(env('PLAYWRIGHT'), 'node_modules') + '/');
const { chromium } = require('playwright-core');

mkdirSync(SHOTS, { recursive: true });
// A fresh profile: nothing from an earlier run, nothing shared.
const profile = mkdtempSync(join(tmpdir(), 'flowc-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1200, height: 900 },
  // The machine's network is closed: nothing may call home.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const summary = {};
const fail = (message) => { throw new Error(message); };

try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(20000);
  const seen = async (what) => {
    const html = await page.content();
    if (html.includes(CANARY)) fail(`${what} carries the canary secret`);
    return html;
  };
  const card = (run) => page.locator(`article[data-run="${run}"]`);

  // Logging in.
  await page.goto(`${BASE}/inbox`);
  if (!page.url().endsWith('/login')) fail(`not sent to the login page: ${page.url()}`);
  await page.getByLabel('Reviewer token').fill('not a token');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('unknown token').waitFor();
  await page.getByLabel('Reviewer token').fill(env('TOKEN'));
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(`${BASE}/inbox`);
  await page.getByRole('heading', { name: 'Inbox' }).waitFor();
  summary.cards = await page.locator('article.card').count();
  if (summary.cards !== 3) fail(`${summary.cards} cards, not 3`);
  const shown = await card(env('RUN_EDIT')).locator('.shown').innerText();
  if (!shown.includes('parcel damaged')) fail(`the shown value is not rendered: ${shown}`);
  summary.proposed = await card(env('RUN_EDIT')).locator('.proposed').innerText();
  if (!summary.proposed.includes('approved as shown: order A-3 · amount 41.0')) fail(`the proposed call's arguments: ${summary.proposed}`);
  await card(env('RUN_EDIT')).getByText('Steps that led here').click();
  await card(env('RUN_EDIT')).getByText('Edit, then approve').click();
  await seen('the inbox');
  await page.screenshot({ path: join(SHOTS, 'inbox.png'), fullPage: true });

  // Approve one.
  await card(env('RUN_APPROVE')).getByRole('button', { name: 'Approve', exact: true }).click();
  await page.getByText(`Gate refund of run ${env('RUN_APPROVE')}: approved.`).waitFor();

  // Reject one: first without a reason (refused beside the field), then with one.
  await card(env('RUN_REJECT')).getByRole('button', { name: 'Reject' }).click();
  await card(env('RUN_REJECT')).getByText('a rejection needs a reason').waitFor();
  await card(env('RUN_REJECT')).getByPlaceholder('Why reject?').fill('duplicate claim');
  await card(env('RUN_REJECT')).getByRole('button', { name: 'Reject' }).click();
  await page.getByText(`Gate refund of run ${env('RUN_REJECT')}: rejected.`).waitFor();

  // Edit one: an amount the type refuses, then one it accepts.
  const edit = card(env('RUN_EDIT'));
  await edit.getByText('Edit, then approve').click();
  await edit.locator('input[name="f.amount"]').fill('-5');
  await edit.getByRole('button', { name: 'Approve the edited value' }).click();
  const problem = card(env('RUN_EDIT')).locator('input[name="f.amount"] >> xpath=../following-sibling::div[contains(@class, "error")]');
  await problem.first().waitFor();
  summary.inline_error = await problem.first().innerText();
  if (!summary.inline_error.includes('/amount')) fail(`the problem is not the amount's: ${summary.inline_error}`);
  summary.kept_value = await card(env('RUN_EDIT')).locator('input[name="f.amount"]').inputValue();
  await seen('the refused edit');
  await page.screenshot({ path: join(SHOTS, 'inbox-edit-refused.png'), fullPage: true });
  await card(env('RUN_EDIT')).locator('input[name="f.amount"]').fill('10');
  await card(env('RUN_EDIT')).locator('select[name="f.kind"]').selectOption('partial');
  await card(env('RUN_EDIT')).locator('input[name="f.reason"]').fill('partial refund agreed with the customer');
  await card(env('RUN_EDIT')).getByRole('button', { name: 'Approve the edited value' }).click();
  await page.getByText(`Gate refund of run ${env('RUN_EDIT')}: approved with an edited value.`).waitFor();
  await page.getByText('No gate is waiting for you.').waitFor();
  await seen('the empty inbox');

  // The run page, once the worker finished the edited run.
  for (let i = 0; ; i++) {
    await page.goto(`${BASE}/runs/${env('RUN_EDIT')}`);
    if (await page.locator('h1 .status.completed').count() > 0) break;
    if (i > 100) fail('the edited run did not complete');
    await page.waitForTimeout(200);
  }
  await page.getByText('Spend against budget').waitFor();
  summary.released = await page.locator('details', { hasText: 'Released (edited)' }).innerText();
  await seen('the run page');
  await page.screenshot({ path: join(SHOTS, 'run.png'), fullPage: true });
  await page.goto(`${BASE}/runs`);
  await seen('the runs page');
  console.log(JSON.stringify(summary));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
