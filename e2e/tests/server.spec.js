// The production server's access control and NAT traversal, seen from real pages: room
// tokens, full rooms, and data through a real TURN server (coturn) with relay-only ICE.
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import os from 'node:os';
import { once } from 'node:events';
import { test, expect, startServer, joinRoom, waitForPeers } from './harness.js';

/** A room token as an application server makes one (the README shows the same code). */
function roomToken(secret, room, ttlSeconds) {
  const expires = Math.floor(Date.now() / 1000) + ttlSeconds;
  const mac = crypto.createHmac('sha256', secret).update(`${room}\n${expires}`).digest('base64url');
  return `${expires}.${mac}`;
}

/** Joins and returns the SwarmError code it rejects with (or 'joined'). */
async function joinError(browser, server, room, options) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.url}/`);
  return page.evaluate(async ({ room, options }) => {
    const { default: init, Swarm } = await import('/pkg/client_wasm.js');
    await init();
    try {
      await Swarm.join(location.origin, room, options);
      return { code: 'joined' };
    } catch (err) {
      return { code: err.code, name: err.name, message: err.message };
    }
  }, { room, options });
}

test('with a token secret, pages join only with a valid token for their room', async ({ browser }) => {
  const secret = 'an application secret';
  const server = await startServer(['--token-secret', secret]);
  try {
    const none = await joinError(browser, server, 'members');
    expect(none.code).toBe('unauthorized');
    expect(none.name).toBe('SwarmError');
    expect(none.message).toContain('needs a token');
    const elsewhere = await joinError(browser, server, 'members', { token: roomToken(secret, 'other', 60) });
    expect(elsewhere.code).toBe('unauthorized');
    const forged = await joinError(browser, server, 'members', { token: roomToken('guess', 'members', 60) });
    expect(forged.code).toBe('unauthorized');
    const bad = await joinError(browser, server, 'members', { token: 42 });
    expect(bad.code).toBe('invalid-option');

    const a = await joinRoom(browser, server, 'members', 'a', { token: roomToken(secret, 'members', 60) });
    const b = await joinRoom(browser, server, 'members', 'b', { token: roomToken(secret, 'members', 60) });
    await waitForPeers(a, [b.id]);
    await waitForPeers(b, [a.id]);
  } finally {
    await server.stop();
  }
});

test('a full room refuses the next page with room-full', async ({ browser }) => {
  const server = await startServer(['--max-peers-per-room', '2']);
  try {
    const a = await joinRoom(browser, server, 'duo', 'a');
    const b = await joinRoom(browser, server, 'duo', 'b');
    const third = await joinError(browser, server, 'duo');
    expect(third.code).toBe('room-full');
    expect(third.message).toContain('full');
    await waitForPeers(a, [b.id]);
  } finally {
    await server.stop();
  }
});

/** The address of this network namespace's own interface (not loopback). */
function interfaceAddress() {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) {
      if (a.family === 'IPv4' && !a.internal) return a.address;
    }
  }
  throw new Error('no network interface besides loopback');
}

/** Starts coturn with TURN REST API authentication on `ip`, on a free-ish port. */
async function startCoturn(ip, secret) {
  const port = 30_000 + Math.floor(Math.random() * 5_000);
  const child = spawn('turnserver', [
    '-n', '--listening-ip', ip, '--relay-ip', ip, '--listening-port', String(port),
    '--min-port', '40000', '--max-port', '40999',
    '--use-auth-secret', '--static-auth-secret', secret, '--realm', 'swarm.test',
    '--no-tls', '--no-dtls', '--no-cli', '--no-multicast-peers',
    '--userdb', `${os.tmpdir()}/swarm-turn-${port}.db`, '--pidfile', `${os.tmpdir()}/swarm-turn-${port}.pid`,
    '--log-file', 'stdout', '--simple-log',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (chunk) => { log += chunk; });
  child.stderr.on('data', (chunk) => { log += chunk; });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`coturn did not start:\n${log}`)), 10_000);
    const check = setInterval(() => {
      if (/DB connection success/.test(log)) {
        clearTimeout(timer);
        clearInterval(check);
        resolve();
      }
    }, 100);
    child.on('exit', (code) => reject(new Error(`coturn exited with ${code}:\n${log}`)));
  });
  return {
    url: `turn:${ip}:${port}?transport=udp`,
    log: () => log,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

test('with relay-only ICE, data flows through coturn using credentials the server issued', async ({ browser }) => {
  test.setTimeout(90_000);
  const secret = 'shared with coturn';
  const turn = await startCoturn(interfaceAddress(), secret);
  const server = await startServer(['--turn-url', turn.url, '--turn-secret', secret, '--turn-ttl', '600']);
  try {
    const a = await joinRoom(browser, server, 'relayed', 'a', { iceTransportPolicy: 'relay' });
    const b = await joinRoom(browser, server, 'relayed', 'b', { iceTransportPolicy: 'relay' });
    await waitForPeers(a, [b.id], 40_000);
    await waitForPeers(b, [a.id], 40_000);
    await a.page.evaluate((to) => window.swarm.send(to, 'through the relay'), b.id);
    await expect.poll(() => b.page.evaluate(() => window.events.filter((e) => e.type === 'message').map((e) => e.data)))
      .toEqual(['through the relay']);
    // The connection in use runs between two relay candidates.
    const types = await a.page.evaluate(async (peer) => {
      const stats = await window.swarm.getStats(peer);
      const all = [...stats.values()];
      const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = all.find((s) => s.id === transport?.selectedCandidatePairId)
        ?? all.find((s) => s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated);
      const local = all.find((s) => s.id === pair.localCandidateId);
      const remote = all.find((s) => s.id === pair.remoteCandidateId);
      return [local.candidateType, remote.candidateType];
    }, b.id);
    // coturn (use-auth-secret) only allocates relays for credentials made with its secret.
    expect(types).toEqual(['relay', 'relay']);
  } finally {
    await server.stop();
    await turn.stop();
  }
});
