// The demo page, as a person uses it.
import fs from 'node:fs';
import { test, expect, testClip } from './harness.js';

/** Opens the page at `#hash` (a room name, or `room/contentId`) in a context of its own. */
async function openRoom(browser, server, hash) {
  const page = await (await browser.newContext()).newPage();
  // Everything the page logs, printed if the test fails.
  page.logs = [];
  page.on('console', (msg) => page.logs.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => page.logs.push(`page error: ${err.message}`));
  await page.goto(`${server.url}/#${hash}`);
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

test('a secret room from the lobby: the secret stays in the fragment, the link brings others in, the server never sees the name', async ({ browser, server }) => {
  const context = await browser.newContext();
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  const page = await context.newPage();
  const sockets = [];
  page.on('websocket', (socket) => sockets.push(socket.url()));
  await page.goto(`${server.url}/`);
  await page.fill('#room-input', 'our-plans');
  await page.check('#secret-input');
  await page.click('#join-form button');
  await expect(page.locator('#my-id')).toHaveText(/^[0-9a-f]{32}$/);
  await expect(page.locator('#secret-badge')).toBeVisible();
  const hash = await page.evaluate(() => location.hash);
  expect(hash).toMatch(/^#our-plans\?k=[A-Za-z0-9_-]{22}$/);
  // The server saw a derived name, not the room's, and nothing of the secret.
  expect(sockets.length).toBe(1);
  expect(sockets[0]).toMatch(/\/ws\/s-[0-9a-f]{32}\?/);
  expect(sockets[0]).not.toContain('our-plans');
  expect(sockets[0]).not.toContain(hash.split('k=')[1]);
  // Copy link carries the secret; a page opened from it joins the same room.
  await page.click('#copy-link');
  const link = await page.evaluate(() => navigator.clipboard.readText());
  expect(link).toBe(`${server.url}/${hash}`);
  const b = await openRoom(browser, server, hash.slice(1));
  await expect(b.page.locator('#secret-badge')).toBeVisible();
  await expect(page.locator(`#peer-list li[data-peer-id="${b.id}"]`)).toBeVisible({ timeout: 20_000 });
  await b.page.fill('#chat-input', 'only we can read the way in');
  await b.page.press('#chat-input', 'Enter');
  await expect(page.locator('#chat-log li.theirs')).toContainText('only we can read the way in');
  // The same name without the secret is another room: nobody there.
  const outsider = await openRoom(browser, server, 'our-plans');
  await expect(outsider.page.locator('#secret-badge')).toBeHidden();
  await outsider.page.waitForTimeout(1500);
  await expect(outsider.page.locator('#peer-count')).toHaveText('0');
  fs.mkdirSync('artifacts', { recursive: true });
  await page.setViewportSize({ width: 1100, height: 720 });
  await page.screenshot({ path: 'artifacts/secret-room.png' });
});

test('files: share by picking, download with a live piece map, and open a #room/id link', async ({ browser, server }) => {
  const a = await openRoom(browser, server, 'files-ui');
  const b = await openRoom(browser, server, 'files-ui');
  await expect(a.page.locator(`#peer-list li[data-peer-id="${b.id}"]`)).toBeVisible({ timeout: 20_000 });
  await expect(a.page.locator('#no-files')).toBeVisible();

  const size = 6 * 1024 * 1024;
  const buffer = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buffer[i] = (i * 2654435761) >>> 24;
  await a.page.setInputFiles('#file-input', { name: 'holiday.bin', mimeType: 'application/octet-stream', buffer });
  const row = (page) => page.locator('#file-list li.file').first();
  await expect(row(a.page)).toContainText('holiday.bin');
  await expect(row(a.page)).toContainText('seeding');

  await expect(row(b.page)).toContainText('holiday.bin', { timeout: 20_000 });
  await expect(row(b.page)).toContainText('1 source');
  await row(b.page).getByRole('button', { name: 'Download' }).click();
  await expect(row(b.page)).toContainText('complete', { timeout: 60_000 });
  await expect(row(b.page).locator('.progress > div')).toHaveAttribute('style', /width: 100/);
  // The piece map has a row for us and one for the seeder.
  await expect(row(b.page).locator('.piece-map canvas')).toHaveCount(2);

  fs.mkdirSync('artifacts', { recursive: true });
  await b.page.setViewportSize({ width: 1100, height: 900 });
  await b.page.screenshot({ path: 'artifacts/files.png', fullPage: true });

  // A third page opened from a copied link downloads the file by itself, from both.
  const id = await row(a.page).getAttribute('data-content-id');
  const c = await openRoom(browser, server, `files-ui/${id}`);
  try {
    await expect(row(c.page)).toContainText('complete', { timeout: 60_000 });
    for (const other of [a, b]) {
      await expect(c.page.locator(`#peer-list li[data-peer-id="${other.id}"]`)).toBeVisible({ timeout: 20_000 });
    }
    await expect(row(c.page)).toContainText('2 sources');
  } catch (err) {
    for (const [name, member] of Object.entries({ a, b, c })) {
      console.log(`${name} ${member.id}:\n  ${member.page.logs.join('\n  ')}`);
    }
    throw err;
  }
});

test('live: the camera button publishes, peers see a labelled tile, stop removes it', async ({ browser, server }) => {
  const a = await openRoom(browser, server, 'live-ui');
  const b = await openRoom(browser, server, 'live-ui');
  await expect(a.page.locator(`#peer-list li[data-peer-id="${b.id}"]`)).toBeVisible({ timeout: 20_000 });
  await a.page.click('#camera');
  await expect(a.page.locator('#camera')).toHaveText('Stop camera');
  await expect(a.page.locator('.tile.local')).toHaveCount(1);
  const tile = b.page.locator(`.tile[data-peer-id="${a.id}"]`);
  await expect(tile).toHaveCount(1, { timeout: 20_000 });
  await expect(tile.locator('.tile-label')).toHaveText(a.id.slice(0, 8));
  // The remote video actually plays.
  await b.page.waitForFunction((id) => {
    const video = document.querySelector(`.tile[data-peer-id="${id}"] video`);
    return video && video.currentTime > 0 && video.videoWidth > 0;
  }, a.id, { timeout: 20_000 });
  await tile.locator('.tile-mute').click();
  await expect(tile.locator('.tile-mute')).toHaveText('Unmute');
  // Muting ourselves disables the microphone track we send.
  await a.page.click('#mute-self');
  await expect(a.page.locator('#mute-self')).toHaveText('Unmute me');
  expect(await a.page.evaluate(() => document.querySelector('.tile.local video').srcObject.getAudioTracks()[0].enabled)).toBe(false);
  fs.mkdirSync('artifacts', { recursive: true });
  await b.page.setViewportSize({ width: 1100, height: 800 });
  await b.page.screenshot({ path: 'artifacts/live.png' });
  await a.page.click('#camera');
  await expect(a.page.locator('#camera')).toHaveText('Camera');
  await expect(a.page.locator('#mute-self')).toBeDisabled();
  await expect(tile).toHaveCount(0, { timeout: 20_000 });
});

test('a shared video has a Play button that plays it while it downloads', async ({ browser, server }) => {
  const clip = testClip();
  const a = await openRoom(browser, server, 'cinema');
  const b = await openRoom(browser, server, 'cinema');
  await expect(a.page.locator(`#peer-list li[data-peer-id="${b.id}"]`)).toBeVisible({ timeout: 20_000 });
  await a.page.setInputFiles('#file-input', clip);
  const row = b.page.locator('#file-list li.file').first();
  await expect(row).toContainText('clip-streamable.webm', { timeout: 20_000 });
  await row.getByRole('button', { name: 'Play' }).click();
  await b.page.waitForFunction(() => {
    const video = document.querySelector('#file-list video.player');
    return video && video.currentTime > 0.5;
  }, null, { timeout: 30_000 });
  await expect(row.getByRole('button', { name: 'Close player' })).toBeVisible();
  fs.mkdirSync('artifacts', { recursive: true });
  await b.page.setViewportSize({ width: 1100, height: 900 });
  await row.scrollIntoViewIfNeeded();
  await b.page.screenshot({ path: 'artifacts/player.png' });
});
