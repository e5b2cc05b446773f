// Storage worker: keeps downloads in the Origin Private File System with synchronous access
// handles, so pieces are written at their offset as they arrive and a multi-GiB file never
// sits in memory. The client starts it from a Blob URL; every request carries a `seq` that
// the reply echoes.
//
// Requests: {seq, op: 'open', name, size} | {seq, op: 'write', name, offset, data, sha256?} |
//           {seq, op: 'read', name, offset, len} | {seq, op: 'close', name} |
//           {seq, op: 'remove', name}
// Replies:  {seq, ok: true, data?} | {seq, ok: false, error}
// A write with `sha256` (32 bytes) hashes `data` first and writes it only if it matches: its
// reply's `data` says whether it did. (The browser's SHA-256 is many times faster than one
// compiled to WebAssembly, and here it does not hold up the page.)
const handles = new Map();
let dir = null;

async function directory() {
  if (!dir) {
    const root = await navigator.storage.getDirectory();
    dir = await root.getDirectoryHandle('swarm', { create: true });
  }
  return dir;
}

function equal(a, b) {
  const [x, y] = [new Uint8Array(a), new Uint8Array(b)];
  return x.length === y.length && x.every((byte, i) => byte === y[i]);
}

async function handle(request) {
  const { op, name } = request;
  switch (op) {
    case 'open': {
      if (handles.has(name)) return {};
      const file = await (await directory()).getFileHandle(name, { create: true });
      const access = await file.createSyncAccessHandle();
      access.truncate(request.size);
      handles.set(name, access);
      return {};
    }
    case 'write': {
      const access = handles.get(name);
      if (!access) throw new Error(`${name} is not open`);
      const bytes = new Uint8Array(request.data);
      if (request.sha256 && !equal(await crypto.subtle.digest('SHA-256', bytes), request.sha256)) {
        return { data: false };
      }
      let written = 0;
      while (written < bytes.length) {
        written += access.write(bytes.subarray(written), { at: request.offset + written });
      }
      return { data: true };
    }
    case 'read': {
      const access = handles.get(name);
      if (!access) {
        // Closed (complete): read the file itself.
        const file = await (await (await directory()).getFileHandle(name)).getFile();
        const end = request.offset + request.len;
        const data = await file.slice(request.offset, end).arrayBuffer();
        if (data.byteLength !== request.len) throw new Error(`short read of ${name}`);
        return { data, transfer: [data] };
      }
      const bytes = new Uint8Array(request.len);
      const read = access.read(bytes, { at: request.offset });
      if (read !== request.len) throw new Error(`short read: ${read} of ${request.len} bytes`);
      return { data: bytes.buffer, transfer: [bytes.buffer] };
    }
    case 'close': {
      const access = handles.get(name);
      if (access) {
        access.flush();
        access.close();
        handles.delete(name);
      }
      return {};
    }
    case 'remove': {
      const access = handles.get(name);
      if (access) {
        access.close();
        handles.delete(name);
      }
      await (await directory()).removeEntry(name).catch(() => {});
      return {};
    }
    default:
      throw new Error(`unknown storage operation ${op}`);
  }
}

// Requests are handled one at a time, in order, so a read never overtakes the write before it.
let queue = Promise.resolve();
self.onmessage = (event) => {
  const request = event.data;
  queue = queue.then(async () => {
    try {
      const { data, transfer } = await handle(request);
      self.postMessage({ seq: request.seq, ok: true, data }, transfer || []);
    } catch (err) {
      self.postMessage({ seq: request.seq, ok: false, error: `${err.name}: ${err.message}` });
    }
  });
};
