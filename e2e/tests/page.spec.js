// The demo page, as a person uses it.
import fs from 'node:fs';
import { test, expect } from './harness.js';

async function openRoom(browser, server, room) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.url}/#${room}`);
  await expect(page.locator('#my-id')).toHaveText(/^[0-9a-f]{32}$/);
  return { page, id: await page.locator('#my-id').textContent() };
}

test('the page shows its id, a live peer list, and chat that goes peer to peer', async ({ browser, server }) => {
  const a = await openRoom(browser, server, 'ui');
  await expect(a.page.locator('#room-name')).toHaveText('ui');
  await expect(a.page.locator('#status')).toHaveAttribute('data-state', 'connected');
  await expect(a.page.locator('#no-peers')).toBeVisible();

  const b = await openRoom(browser, server, 'ui');
  const c = await openRoom(browser, server, 'ui');
  for (const [member, others] of [[a, [b, c]], [b, [a, c]], [c, [a, b]]]) {
    for (const other of others) {
      await expect(member.page.locator(`#peer-list li[data-peer-id="${other.id}"]`)).toBeVisible({ timeout: 20_000 });
    }
    await expect(member.page.locator('#peer-count')).toHaveText('2');
  }

  await b.page.fill('#chat-input', 'hello from b');
  await b.page.click('#chat-form button');
  await expect(b.page.locator('#chat-log li.mine')).toContainText('hello from b');
  for (const member of [a, c]) {
    const line = member.page.locator('#chat-log li.theirs');
    await expect(line).toContainText('hello from b');
    await expect(line.locator('.from')).toHaveAttribute('title', b.id);
  }
  await a.page.fill('#chat-input', 'hi b, hi c');
  await a.page.press('#chat-input', 'Enter');
  await expect(b.page.locator('#chat-log li.theirs')).toContainText('hi b, hi c');

  fs.mkdirSync('artifacts', { recursive: true });
  await a.page.setViewportSize({ width: 1100, height: 720 });
  await a.page.screenshot({ path: 'artifacts/room.png' });

  await c.page.close();
  await expect(a.page.locator(`#peer-list li[data-peer-id="${c.id}"]`)).toHaveCount(0, { timeout: 5_000 });
  await expect(a.page.locator('#peer-count')).toHaveText('1');
});

test('the lobby joins the room typed in, and a bad room name is explained', async ({ browser, server }) => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.url}/`);
  await expect(page.locator('#lobby')).toBeVisible();
  await page.fill('#room-input', 'lobby-room');
  await page.click('#join-form button');
  await expect(page).toHaveURL(/#lobby-room$/);
  await expect(page.locator('#my-id')).toHaveText(/^[0-9a-f]{32}$/);

  await page.goto(`${server.url}/#bad%20room`);
  await expect(page.locator('#failure')).toBeVisible();
  await expect(page.locator('#failure-message')).toContainText('invalid-room');
});
