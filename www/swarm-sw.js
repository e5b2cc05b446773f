// Streaming service worker of the swarm: answers HTTP requests for `stream/<contentId>`
// (below this worker's scope) with bytes the page's swarm fetches from peers, so <video> and
// <audio> play any format the browser supports, with seeking, while the file downloads.
// Range requests get 206 responses of up to about 1 MiB; the element asks again for the rest.
// A request without Range gets the whole file, streamed.
const STREAM = /\/stream\/([0-9a-f]{64})$/;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  const match = url.origin === self.location.origin && url.pathname.match(STREAM);
  if (match) event.respondWith(serve(event, match[1]));
});

async function pageFor(event) {
  const own = event.clientId && (await self.clients.get(event.clientId));
  if (own) return own;
  const pages = await self.clients.matchAll({ type: 'window' });
  return pages[0];
}

/** Asks the page for bytes [start, end] (end -1: open-ended) of content `id`. */
function ask(page, id, start, end) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = (event) => resolve(event.data);
    page.postMessage({ type: 'swarm-range', id, start, end }, [channel.port2]);
  });
}

function failure(reply) {
  return new Response(reply.error || 'stream failed', {
    status: reply.status || 500,
    headers: { 'Content-Type': 'text/plain' },
  });
}

async function serve(event, id) {
  const page = await pageFor(event);
  if (!page) return failure({ status: 503, error: 'no open page holds this swarm' });
  const range = /^bytes=(\d+)-(\d*)$/.exec(event.request.headers.get('range') || '');
  if (range) {
    const reply = await ask(page, id, Number(range[1]), range[2] ? Number(range[2]) : -1);
    if (!reply.ok) {
      return reply.status === 416 && reply.size !== undefined
        ? new Response(null, { status: 416, headers: { 'Content-Range': `bytes */${reply.size}` } })
        : failure(reply);
    }
    const last = reply.start + reply.data.byteLength - 1;
    return new Response(reply.data, {
      status: 206,
      headers: {
        'Content-Type': reply.mime || 'application/octet-stream',
        'Content-Length': String(reply.data.byteLength),
        'Content-Range': `bytes ${reply.start}-${last}/${reply.size}`,
        'Accept-Ranges': 'bytes',
      },
    });
  }
  // No Range: the whole file, one chunk after another.
  const first = await ask(page, id, 0, -1);
  if (!first.ok) {
    if (first.status === 416) return new Response(new Uint8Array(0), { status: 200 });
    return failure(first);
  }
  let next = first.start + first.data.byteLength;
  let pending = first;
  const body = new ReadableStream({
    async pull(controller) {
      if (pending) {
        controller.enqueue(new Uint8Array(pending.data));
        pending = null;
      } else if (next < first.size) {
        const reply = await ask(page, id, next, -1);
        if (!reply.ok) return controller.error(new Error(reply.error));
        controller.enqueue(new Uint8Array(reply.data));
        next += reply.data.byteLength;
      }
      if (!pending && next >= first.size) controller.close();
    },
  });
  return new Response(body, {
    status: 200,
    headers: {
      'Content-Type': first.mime || 'application/octet-stream',
      'Content-Length': String(first.size),
      'Accept-Ranges': 'bytes',
    },
  });
}
