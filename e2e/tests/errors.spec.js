// The unhappy path of a download: storage that fails, a cancel, a seeder that goes, a page that
// leaves or closes mid-transfer. Each ends with the pages still working (a message goes
// through), and the harness fails the test on any page error or Rust panic.
import { test, expect, joinRoom, joinInPage, waitForPeers, events, mesh, share, startDownload, outcome } from './harness.js';

const MiB = 1024 * 1024;

test.describe.configure({ timeout: 180_000 });

/** Waits until `member`'s download has received some bytes but not all. */
async function midway(member) {
  await member.page.waitForFunction(() => window.lastProgress.received > 0, null, { timeout: 30_000 });
  const progress = await member.page.evaluate(() => window.lastProgress);
  expect(progress.received).toBeLessThan(progress.total);
}

/** `from` sends a message to `to`, and `to` receives it: both pages are still alive. */
async function stillTalking(from, to, text) {
  await from.page.evaluate(([peer, text]) => window.swarm.send(peer, text), [to.id, text]);
  await to.page.waitForFunction(
    ([from, text]) => window.events.some((e) => e.type === 'message' && e.from === from && e.data === text),
    [from.id, text],
    { timeout: 10_000 },
  );
}

test('without storage (a worker that never answers) join still works, a download fails with storage, and the page keeps working', async ({ browser, server }) => {
  const seeder = await joinRoom(browser, server, 'no-storage', 'seeder');
  // Workers that start but never answer, as one a page's Content-Security-Policy blocks may
  // behave: `join` must not wait for the storage forever.
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.Worker = class {
      postMessage() {}
      terminate() {}
    };
  });
  const page = await context.newPage();
  await page.goto(`${server.url}/`);
  const lan = { page, context, label: 'no-worker' };
  const started = Date.now();
  lan.id = await page.evaluate(joinInPage, { room: 'no-storage', options: undefined });
  expect(Date.now() - started).toBeLessThan(25_000);
  expect(await page.evaluate(() => window.swarm.storage)).toBeNull();
  expect(await page.evaluate(() => window.swarm.stored())).toEqual([]);
  await waitForPeers(lan, [seeder.id]);
  const file = await share(seeder, 4 * MiB, 11);
  await startDownload(lan, file.id).catch(() => {});
  const thrownNow = await page.evaluate((id) => {
    try { window.swarm.download(id); return null; } catch (err) { return { name: err.name, code: err.code, message: err.message }; }
  }, file.id);
  expect(thrownNow).toMatchObject({ name: 'SwarmError', code: 'storage' });
  expect(thrownNow.message).toContain('no storage worker');
  // The page still talks both ways.
  await stillTalking(lan, seeder, 'after storage failed');
  await stillTalking(seeder, lan, 'and back');
  expect(await page.evaluate((id) => window.swarm.files().find((f) => f.id === id).complete, file.id)).toBe(false);
});

test('a download cancelled midway rejects with cancelled, and the same file then downloads whole', async ({ browser, server }) => {
  const [seeder, downloader] = await mesh(browser, server, 'cancel', 2);
  const file = await share(seeder, 80 * MiB, 12);
  await startDownload(downloader, file.id);
  await midway(downloader);
  await downloader.page.evaluate(() => window.dl.cancel());
  expect(await outcome(downloader)).toMatchObject({ ok: false, name: 'SwarmError', code: 'cancelled' });
  await startDownload(downloader, file.id);
  expect(await outcome(downloader)).toEqual({ ok: true, size: 80 * MiB, hash: file.hash });
  await stillTalking(downloader, seeder, 'after cancel');
});

test('when the only seeder leaves midway the download waits, and finishes from a new seeder of the same file', async ({ browser, server }) => {
  const [seeder, downloader] = await mesh(browser, server, 'seeder-gone', 2);
  const file = await share(seeder, 80 * MiB, 13);
  await startDownload(downloader, file.id);
  await midway(downloader);
  await seeder.context.close();
  await downloader.page.waitForFunction(() => window.swarm.peers().length === 0, null, { timeout: 15_000 });
  // Still pending: nothing is lost while nobody serves it.
  const pending = await downloader.page.evaluate(() => Promise.race([
    window.result.then(() => 'ended'),
    new Promise((resolve) => setTimeout(() => resolve('pending'), 1500)),
  ]));
  expect(pending).toBe('pending');
  const again = await joinRoom(browser, server, 'seeder-gone', 'seeder-again');
  await waitForPeers(downloader, [again.id]);
  expect((await share(again, 80 * MiB, 13)).id).toBe(file.id);
  expect(await outcome(downloader)).toEqual({ ok: true, size: 80 * MiB, hash: file.hash });
  await stillTalking(again, downloader, 'after the seeder came back');
});

test('leave() during a download rejects it with left, and the seeder goes on serving others', async ({ browser, server }) => {
  const [seeder, leaver] = await mesh(browser, server, 'leave', 2);
  const file = await share(seeder, 80 * MiB, 14);
  await startDownload(leaver, file.id);
  await midway(leaver);
  await leaver.page.evaluate(() => window.swarm.leave());
  expect(await outcome(leaver, 10_000)).toMatchObject({ ok: false, name: 'SwarmError', code: 'left' });
  await seeder.page.waitForFunction(() => window.swarm.peers().length === 0, null, { timeout: 15_000 });
  const third = await joinRoom(browser, server, 'leave', 'third');
  await waitForPeers(seeder, [third.id]);
  await startDownload(third, file.id);
  expect(await outcome(third)).toEqual({ ok: true, size: 80 * MiB, hash: file.hash });
  await stillTalking(seeder, third, 'after a peer left mid-download');
});

test('a page closed while the seeder has frames queued for it does not wedge the seeder', async ({ browser, server }) => {
  const [seeder, closer, other] = await mesh(browser, server, 'closed', 3);
  const file = await share(seeder, 80 * MiB, 15);
  await startDownload(closer, file.id);
  await midway(closer);
  await closer.context.close();
  await waitForPeers(seeder, [other.id]);
  const left = (await events(seeder)).filter((e) => e.type === 'peer-left').map((e) => e.id);
  expect(left).toEqual([closer.id]);
  await startDownload(other, file.id);
  expect(await outcome(other)).toEqual({ ok: true, size: 80 * MiB, hash: file.hash });
  await stillTalking(other, seeder, 'after a page closed mid-download');
});

test('a signalling socket that never opens (blocked by the page CSP) fails the join instead of hanging', async ({ browser, server }) => {
  // The socket neither opens nor closes: Chromium blocks it and fires nothing, as for a server
  // that drops packets. `join` rejects with server-unreachable after the answer deadline.
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.route('**/', async (route) => {
    const response = await route.fetch();
    const policy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; img-src 'self' data:";
    await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': policy } });
  });
  await page.goto(`${server.url}/`);
  const started = Date.now();
  const result = await page.evaluate(async () => {
    const { default: init, Swarm } = await import('/pkg/client_wasm.js');
    await init();
    return Swarm.join('ws://127.0.0.1:9', 'demo').then(() => ({ joined: true }), (err) => ({ name: err.name, code: err.code, message: err.message }));
  });
  expect(result).toMatchObject({ name: 'SwarmError', code: 'server-unreachable' });
  expect(result.message).toContain('no answer within 15 s');
  expect(Date.now() - started).toBeLessThan(30_000);
});
