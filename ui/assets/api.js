// The HTTP API as the pages use it: the token from localStorage sent as
// X-Consul-Token, JSON in and out, and blocking queries that follow a
// result live until their page is left.

const TOKEN_KEY = 'tribune:token';

export function token() { return localStorage.getItem(TOKEN_KEY) || ''; }
export function setToken(t) {
  if (t) localStorage.setItem(TOKEN_KEY, t); else localStorage.removeItem(TOKEN_KEY);
}

export class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = token();
  if (t) h['X-Consul-Token'] = t;
  return h;
}

// request calls the API and returns the decoded JSON body (null when
// empty), the raw text when raw is set, and the X-Consul-Index.
export async function request(method, path, { body, raw, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  if (!resp.ok) {
    throw new APIError(resp.status, `${method} ${path}: ${resp.status} ${text.trim() || resp.statusText}`);
  }
  const index = Number(resp.headers.get('X-Consul-Index') || 0);
  if (raw) return { data: text, index };
  return { data: text ? JSON.parse(text) : null, index };
}

export const get = (path, opts) => request('GET', path, opts).then((r) => r.data);
export const put = (path, body) => request('PUT', path, { body }).then((r) => r.data);
export const del = (path) => request('DELETE', path).then((r) => r.data);

// watch runs a blocking query on path and calls onData with each new
// result, until signal aborts. It retries errors with a growing delay and
// reports them through onError (null once a read succeeds again).
export function watch(path, signal, onData, onError) {
  let index = 0;
  let delay = 500;
  const sep = path.includes('?') ? '&' : '?';
  (async () => {
    while (!signal.aborted) {
      try {
        const url = index ? `${path}${sep}index=${index}&wait=5m` : path;
        const { data, index: next } = await request('GET', url, { signal });
        delay = 500;
        onError(null);
        // An index that went backwards (a restored snapshot, a new
        // leader's store) starts the query over, as Consul advises.
        if (next < index) { index = 0; continue; }
        if (next !== index || index === 0) onData(data);
        index = next || 0;
        if (!next) await sleep(2000, signal); // not a blocking endpoint
      } catch (err) {
        if (signal.aborted) return;
        onError(err);
        // A 404 is an answer for the page (a deleted key or node).
        if (err.status === 404) { onData(null); }
        await sleep(delay, signal);
        delay = Math.min(delay * 2, 10000);
        index = 0;
      }
    }
  })();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// b64decode turns a KV value (base64 of bytes) into text.
export function b64decode(v) {
  if (!v) return '';
  const bin = atob(v);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

// enc escapes one path segment of a name for a URL, keeping '/' in keys.
export function encKey(k) { return k.split('/').map(encodeURIComponent).join('/'); }
