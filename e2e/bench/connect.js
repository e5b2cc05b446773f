// Benchmark: what signed descriptions and secret rooms cost to connect. A page already in a
// room; a second page calls Swarm.join and the clock runs until its first data channel opens
// (`peer-joined`). Three modes, interleaved round by round so the machine's state is shared:
//   plain    no options: descriptions signed, unsigned ones taken (v1 peers welcome)
//   signed   requireSigned: true (the page's default)
//   secret   requireSigned and a secret: sealed signals, a derived room name
// The order of the modes rotates from round to round.
// Usage: node bench/connect.js [rounds=30]
import { openBench } from './common.js';

const rounds = Number(process.argv[2] || 30);
const modes = {
  plain: undefined,
  signed: { requireSigned: true },
  secret: { requireSigned: true, secret: 'Zt3k9QvXc2Lr7mWp1sHa0g' },
};
const sorted = (xs) => [...xs].sort((a, b) => a - b);
const median = (xs) => sorted(xs)[Math.floor(xs.length / 2)];
const p90 = (xs) => sorted(xs)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))];

const bench = await openBench();
const ready = async () => {
  const page = await bench.page();
  await page.evaluate(async () => {
    const { default: init, Swarm } = await import('/pkg/client_wasm.js');
    await init();
    window.Swarm = Swarm;
  });
  return page;
};
const join = (page, room, options) => page.evaluate(async ({ room, options }) => {
  const started = performance.now();
  const swarm = await window.Swarm.join(location.origin, room, options);
  window.swarm = swarm;
  const welcomed = performance.now();
  if (swarm.peers().length === 0) {
    await new Promise((resolve) => swarm.on('peer-joined', resolve));
  }
  return { welcome: welcomed - started, channel: performance.now() - started };
}, { room, options });

const results = Object.fromEntries(Object.keys(modes).map((m) => [m, { welcome: [], channel: [] }]));
const names = Object.keys(modes);
for (let round = 0; round < rounds; round++) {
  // Each mode goes first, second and third equally often.
  const order = names.map((_, i) => names[(i + round) % names.length]);
  for (const mode of order) {
    const options = modes[mode];
    const [first, second] = [await ready(), await ready()];
    const room = `connect-${mode}-${round}`;
    await first.evaluate(async ({ room, options }) => {
      window.swarm = await window.Swarm.join(location.origin, room, options);
    }, { room, options });
    const { welcome, channel } = await join(second, room, options);
    results[mode].welcome.push(welcome);
    results[mode].channel.push(channel);
    await bench.done(first, second);
  }
}
const base = median(results.plain.channel);
for (const [mode, { welcome, channel }] of Object.entries(results)) {
  console.log(`${mode.padEnd(6)} join -> welcome median ${median(welcome).toFixed(1)} ms; join -> first channel open median ${median(channel).toFixed(1)} ms, p90 ${p90(channel).toFixed(1)} ms (${(median(channel) / base).toFixed(2)} x plain) over ${channel.length} rounds`);
}
await bench.close();
