// Foundation: pages meet through the signalling server and talk over WebRTC data channels.
import { test, expect, joinRoom, waitForPeers, events, thrown } from './harness.js';

async function mesh(browser, server, room, count) {
  const members = [];
  for (let i = 0; i < count; i++) {
    members.push(await joinRoom(browser, server, room, `${room}-${i}`));
  }
  for (const member of members) {
    await waitForPeers(member, members.filter((m) => m !== member).map((m) => m.id));
  }
  return members;
}

test('three pages in one room form a full mesh', async ({ browser, server }) => {
  const members = await mesh(browser, server, 'mesh', 3);
  const ids = members.map((m) => m.id);
  expect(new Set(ids).size).toBe(3);
  for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/);
  for (const member of members) {
    const joined = (await events(member)).filter((e) => e.type === 'peer-joined').map((e) => e.id);
    expect(joined.sort()).toEqual(ids.filter((id) => id !== member.id).sort());
  }
});

test('a message goes from each page to each other page', async ({ browser, server }) => {
  const members = await mesh(browser, server, 'chat', 3);
  for (const from of members) {
    for (const to of members) {
      if (from === to) continue;
      await from.page.evaluate(([id, text]) => window.swarm.send(id, text), [to.id, `${from.label} to ${to.label}`]);
    }
  }
  // Bytes too, to everyone at once.
  const sentTo = await members[0].page.evaluate(() => window.swarm.broadcast(new Uint8Array([0, 1, 2, 255])));
  expect(sentTo).toBe(2);

  for (const to of members) {
    const expected = members.filter((m) => m !== to).map((from) => ({
      type: 'message', from: from.id, kind: 'string', data: `${from.label} to ${to.label}`,
    }));
    if (to !== members[0]) {
      expected.push({ type: 'message', from: members[0].id, kind: 'Uint8Array', data: [0, 1, 2, 255] });
    }
    await expect.poll(async () => (await events(to)).filter((e) => e.type === 'message').length).toBe(expected.length);
    const received = (await events(to)).filter((e) => e.type === 'message');
    expect(received).toEqual(expect.arrayContaining(expected));
  }
});

test('closing a page shows peer-left in the others within 5 s', async ({ browser, server }) => {
  const [a, b, c] = await mesh(browser, server, 'leaving', 3);
  const closedAt = Date.now();
  await c.context.close();
  for (const member of [a, b]) {
    await member.page.waitForFunction(
      (id) => window.events.some((e) => e.type === 'peer-left' && e.id === id),
      c.id,
      { timeout: 5_000 },
    );
    expect(await member.page.evaluate(() => window.swarm.peers())).not.toContain(c.id);
  }
  expect(Date.now() - closedAt).toBeLessThan(5_000);
  // The two that stayed still talk.
  await a.page.evaluate((id) => window.swarm.send(id, 'still here'), b.id);
  await expect.poll(async () => (await events(b)).some((e) => e.type === 'message' && e.data === 'still here')).toBe(true);
});

test('a page joining a different room sees none of them', async ({ browser, server }) => {
  const [a, b] = await mesh(browser, server, 'room-one', 2);
  const other = await joinRoom(browser, server, 'room-two');
  // Give any wrongly introduced connection time to form.
  await other.page.waitForTimeout(2_000);
  expect(await other.page.evaluate(() => window.swarm.peers())).toEqual([]);
  expect(await events(other)).toEqual([]);
  for (const member of [a, b]) {
    expect(await member.page.evaluate(() => window.swarm.peers())).not.toContain(other.id);
  }
});

test('messages keep flowing peer to peer after the signalling server stops', async ({ browser, server }) => {
  const [a, b] = await mesh(browser, server, 'direct', 2);
  await server.stop();
  await a.page.evaluate((id) => window.swarm.send(id, 'no server needed'), b.id);
  await b.page.evaluate(() => window.swarm.broadcast(new Uint8Array([42])));
  await expect.poll(async () => (await events(b)).some((e) => e.data === 'no server needed')).toBe(true);
  await expect.poll(async () => (await events(a)).some((e) => e.kind === 'Uint8Array' && e.data[0] === 42)).toBe(true);
  expect(await a.page.evaluate(() => window.swarm.peers())).toEqual([b.id]);
});

test('joining fails with a clear error', async ({ browser, server }) => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.url}/`);
  const member = { page };
  const join = async ([serverUrl, room]) => {
    const { default: init, Swarm } = await import('/pkg/client_wasm.js');
    await init();
    await Swarm.join(serverUrl, room);
  };
  const unreachable = await thrown(member, join, ['ws://127.0.0.1:9', 'demo']);
  expect(unreachable).toMatchObject({ name: 'SwarmError', code: 'server-unreachable' });
  expect(unreachable.message).toContain('ws://127.0.0.1:9/ws/demo');

  const badRoom = await thrown(member, join, [server.url, 'no spaces']);
  expect(badRoom).toMatchObject({ name: 'SwarmError', code: 'invalid-room' });
  expect(badRoom.message).toContain("' '");

  const tooLong = await thrown(member, join, [server.url, 'x'.repeat(65)]);
  expect(tooLong).toMatchObject({ code: 'invalid-room' });

  const badUrl = await thrown(member, join, ['ftp://127.0.0.1', 'demo']);
  expect(badUrl).toMatchObject({ name: 'SwarmError', code: 'invalid-url' });
});

test('the API refuses bad input with named errors', async ({ browser, server }) => {
  const [a, b] = await mesh(browser, server, 'errors', 2);
  const cases = [
    [(id) => window.swarm.send('0'.repeat(32), 'hi'), 'unknown-peer'],
    [(id) => window.swarm.send('not an id', 'hi'), 'unknown-peer'],
    [(id) => window.swarm.send(id, 42), 'bad-data'],
    [(id) => window.swarm.send(id, { text: 'hi' }), 'bad-data'],
    [(id) => window.swarm.send(id, 'x'.repeat(65_537)), 'message-too-large'],
    [(id) => window.swarm.broadcast(new Uint8Array(65_536)), 'message-too-large'],
    [(id) => window.swarm.on('bogus', () => {}), 'unknown-event'],
    [(id) => window.swarm.on('message', 'not a function'), 'not-a-function'],
  ];
  for (const [fn, code] of cases) {
    expect(await thrown(a, fn, b.id), fn.toString()).toMatchObject({ name: 'SwarmError', code });
  }
  // The largest messages that fit do go through.
  await a.page.evaluate((id) => {
    window.swarm.send(id, 'y'.repeat(65_536));
    window.swarm.send(id, new Uint8Array(65_535).fill(7));
  }, b.id);
  await expect.poll(async () => (await events(b)).filter((e) => e.type === 'message').map((e) => e.data.length))
    .toEqual([65_536, 65_535]);

  // off() removes a listener.
  expect(await a.page.evaluate(() => {
    const f = () => {};
    window.swarm.on('message', f);
    return [window.swarm.off('message', f), window.swarm.off('message', f)];
  })).toEqual([true, false]);

  // After leave(), everything refuses with `left`, and the other side sees peer-left.
  await a.page.evaluate(() => window.swarm.leave());
  expect(await thrown(a, (id) => window.swarm.send(id, 'hi'), b.id)).toMatchObject({ code: 'left' });
  expect(await thrown(a, () => window.swarm.broadcast('hi'))).toMatchObject({ code: 'left' });
  expect(await a.page.evaluate(() => window.swarm.peers())).toEqual([]);
  await b.page.waitForFunction((id) => window.events.some((e) => e.type === 'peer-left' && e.id === id), a.id, { timeout: 5_000 });
});
