/**
 * A strict, bounded HTTP/1.1 CONNECT head parser and the answers that go with it. The client proxy
 * runs it on bytes from kubectl, the access tier on bytes inside the TLS tunnel; both then treat
 * everything after the head as tunnel bytes.
 *
 * Strictness (THREATS AT-09, AT-10, LP-06): CRLF line ends only (a bare LF or CR is refused), no
 * obs-fold, header names must be tokens, values may hold no control characters, and a CONNECT may
 * carry neither Content-Length nor Transfer-Encoding (a body on a CONNECT is how requests get
 * smuggled into the tunnel). Only `CONNECT authority HTTP/1.1` (or HTTP/1.0) is accepted: every
 * other method, and so absolute-form and origin-form requests, is 405. The authority goes through
 * parseAuthority. A Host header, when present, must name the same target (with its port). Errors
 * are decided in byte order, so feeding a head in pieces gives the same answer as feeding it whole,
 * and an obviously bad request is refused before its head is complete.
 *
 * The parser keeps no state between calls: call it again with the grown buffer. It never throws.
 */
import { STATUS_CODES } from 'node:http';
import { CausewayError } from '../errors.ts';
import { parseAuthority } from './target.ts';
import type { Target } from './target.ts';

export type ConnectParse =
  | { state: 'incomplete' }
  | { state: 'done'; authority: string; target: Target; headers: Array<[string, string]>; headLength: number }
  | { state: 'error'; status: 400 | 405 | 431; code: string; message: string };

export interface HeadLimits {
  /** The longest head accepted, final CRLFCRLF included. Default 8192. */
  maxHeadBytes?: number;
  /** The most header lines accepted. Default 64. */
  maxHeaders?: number;
}

export const DEFAULT_MAX_HEAD_BYTES = 8192;
export const DEFAULT_MAX_HEADERS = 64;

/** Parses a CONNECT request head from the start of `buf`. Bytes after `headLength` belong to the tunnel. */
export function parseConnectHead(buf: Buffer, limits?: HeadLimits): ConnectParse {
  let target: Target | undefined;
  let authority = '';
  let sawHost = false;
  const scan = scanHead(
    buf,
    limits,
    (line) => {
      const sp1 = line.indexOf(' ');
      const method = sp1 === -1 ? line : line.slice(0, sp1);
      if (!isToken(method)) return requestError(400, 'bad-request-line', 'the request line is not METHOD SP authority SP HTTP/1.1');
      if (method !== 'CONNECT') {
        return requestError(405, 'not-connect', `this is a CONNECT proxy; ${method} requests (absolute or origin form) are not accepted. Use it as an HTTPS proxy (https_proxy or proxy-url)`);
      }
      const sp2 = sp1 === -1 ? -1 : line.indexOf(' ', sp1 + 1);
      if (sp2 === -1 || line.indexOf(' ', sp2 + 1) !== -1) return requestError(400, 'bad-request-line', 'the request line is not CONNECT SP authority SP HTTP/1.1');
      const version = line.slice(sp2 + 1);
      if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') return requestError(400, 'bad-version', 'only HTTP/1.1 and HTTP/1.0 CONNECT requests are accepted');
      authority = line.slice(sp1 + 1, sp2);
      const parsed = parseAuthority(authority);
      if (!parsed.ok) return requestError(400, parsed.code, `bad CONNECT target: ${parsed.message}`);
      target = parsed.target;
      return undefined;
    },
    (lowerName, value) => {
      if (lowerName === 'content-length') return requestError(400, 'content-length', 'a CONNECT request must not carry Content-Length');
      if (lowerName === 'transfer-encoding') return requestError(400, 'transfer-encoding', 'a CONNECT request must not carry Transfer-Encoding');
      if (lowerName === 'host') {
        if (sawHost) return requestError(400, 'duplicate-host', 'the request carries more than one Host header');
        sawHost = true;
        if (value === authority && target !== undefined) return undefined; // the common case: Host repeats the authority byte for byte
        const host = parseAuthority(value);
        if (!host.ok || target === undefined || !sameTarget(host.target, target)) {
          return requestError(400, 'host-mismatch', 'the Host header must name the CONNECT target, host:port');
        }
      }
      return undefined;
    },
  );
  if (scan.state !== 'done') return scan;
  if (target === undefined) return requestError(400, 'bad-request-line', 'the request line is missing');
  return { state: 'done', authority, target, headers: scan.headers, headLength: scan.headLength };
}

export type ConnectResponseParse =
  | { state: 'incomplete' }
  | { state: 'done'; status: number; reason?: string; hints?: string[]; headers: Array<[string, string]>; headLength: number; bodyLength: number }
  | { state: 'error'; code: string; message: string };

/**
 * Parses the answer to a CONNECT (what the access tier sent back to the client proxy). `reason` is
 * the X-Causeway-Reason header, `hints` the words of X-Causeway-Hints. `bodyLength` is the Content-Length of a non-2xx answer (0 when
 * absent); a 2xx answer to CONNECT has no body, whatever it claims, and its tunnel starts at `headLength`.
 */
export function parseConnectResponseHead(buf: Buffer, limits?: HeadLimits): ConnectResponseParse {
  let status = 0;
  let reason: string | undefined;
  let hints: string[] | undefined;
  let contentLength: number | undefined;
  const scan = scanHead(
    buf,
    limits,
    (line) => {
      // HTTP/1.x SP 3DIGIT [SP reason-phrase]
      if (!(line.startsWith('HTTP/1.1 ') || line.startsWith('HTTP/1.0 '))) return requestError(400, 'bad-status-line', 'the answer is not an HTTP/1.1 status line');
      const code = line.slice(9, 12);
      if (!/^[1-5][0-9][0-9]$/.test(code) || (line.length > 12 && line.charCodeAt(12) !== 0x20)) return requestError(400, 'bad-status-line', 'the status code is not three digits');
      for (let i = 13; i < line.length; i++) {
        if (!isFieldValueChar(line.charCodeAt(i))) return requestError(400, 'bad-status-line', 'the reason phrase contains a control character');
      }
      status = Number(code);
      return undefined;
    },
    (lowerName, value) => {
      if (lowerName === 'transfer-encoding') return requestError(400, 'transfer-encoding', 'the answer carries Transfer-Encoding, which a CONNECT answer never needs');
      if (lowerName === 'content-length') {
        if (!/^[0-9]{1,12}$/.test(value) || (contentLength !== undefined && contentLength !== Number(value))) {
          return requestError(400, 'content-length', 'the answer carries an invalid or conflicting Content-Length');
        }
        contentLength = Number(value);
      }
      if (lowerName === 'x-causeway-reason') reason = value;
      if (lowerName === 'x-causeway-hints') hints = value.split(' ').filter((h) => h !== '');
      return undefined;
    },
  );
  if (scan.state === 'incomplete') return scan;
  if (scan.state === 'error') return { state: 'error', code: scan.code, message: scan.message };
  const bodyLength = status >= 200 && status <= 299 ? 0 : (contentLength ?? 0);
  return {
    state: 'done',
    status,
    ...(reason === undefined ? {} : { reason }),
    ...(hints === undefined || hints.length === 0 ? {} : { hints }),
    headers: scan.headers,
    headLength: scan.headLength,
    bodyLength,
  };
}

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n', 'latin1');
const MAX_REASON_LENGTH = 64;
const MAX_MESSAGE_LENGTH = 1024;

/**
 * The answer to a CONNECT. 2xx: a bare status line (`HTTP/1.1 200 Connection established`), after
 * which the tunnel starts. Anything else: a short text/plain body with `message` (default: the
 * status text), `X-Causeway-Reason: <reason>` when given, and `Connection: close`. `hints` are what
 * the user can act on (`needs:Medium`, `has:Low`, `trust:firewall-off`): they follow the reason in the
 * phrase, in parentheses, and in `X-Causeway-Hints`. Reason, hints and message are sanitised: no CR,
 * LF or other control character ever reaches the wire.
 */
export function formatConnectResponse(status: number, reason?: string, message?: string, hints?: readonly string[]): Buffer {
  if (!Number.isInteger(status) || status < 200 || status > 599) throw new CausewayError('invalid-status', `formatConnectResponse: ${status} is not a final HTTP status`);
  if (status === 200) return Buffer.from(ESTABLISHED);
  const text = STATUS_CODES[status] ?? 'Error';
  if (status < 300) return Buffer.from(`HTTP/1.1 ${status} ${text}\r\n\r\n`, 'latin1');
  const cleanReason = reason === undefined ? '' : sanitiseReason(reason);
  const body = `${sanitiseMessage(message ?? '') || text}\n`;
  // Go's HTTP client (kubectl) shows only the reason phrase of a refused CONNECT, never the body or
  // headers, so the reason code rides in the phrase too: kubectl prints "Forbidden: unknown-service".
  // kubectl then prints "Forbidden: trust-too-low (needs:Medium has:Low trust:firewall-off)".
  const cleanHints = cleanReason === '' ? '' : sanitiseHints(hints ?? []);
  const phrase = cleanReason === '' ? text : cleanHints === '' ? `${text}: ${cleanReason}` : `${text}: ${cleanReason} (${cleanHints})`;
  const head =
    `HTTP/1.1 ${status} ${phrase}\r\n` +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    (cleanReason === '' ? '' : `X-Causeway-Reason: ${cleanReason}\r\n`) +
    (cleanHints === '' ? '' : `X-Causeway-Hints: ${cleanHints}\r\n`) +
    `Content-Length: ${Buffer.byteLength(body, 'utf8')}\r\n` +
    'Connection: close\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(body, 'utf8')]);
}

// ---------------------------------------------------------------------------------------------
// Internals

type HeadError = { state: 'error'; status: 400 | 405 | 431; code: string; message: string };
type HeadScan = { state: 'incomplete' } | HeadError | { state: 'done'; headers: Array<[string, string]>; headLength: number };

const CR = 0x0d;

/** tchar of RFC 9110: letters, digits and !#$%&'*+-.^_`|~ */
const TOKEN = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;
for (const ch of "!#$%&'*+-.^_`|~") TOKEN[ch.charCodeAt(0)] = 1;

function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (TOKEN[s.charCodeAt(i)] !== 1) return false;
  return true;
}

/** Characters never allowed in a field value: controls other than HTAB, and DEL. */
// eslint-disable-next-line no-control-regex
const FIELD_CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/;

/** HTAB, SP, visible ASCII and obs-text (RFC 9110 field-content); never CR, LF, NUL, other controls or DEL. */
function isFieldValueChar(c: number): boolean {
  return c === 0x09 || (c >= 0x20 && c !== 0x7f && c <= 0xff);
}

function requestError(status: 400 | 405 | 431, code: string, message: string): HeadError {
  return { state: 'error', status, code, message };
}

function sameTarget(a: Target, b: Target): boolean {
  return a.kind === b.kind && a.port === b.port && a.host === b.host;
}

/**
 * Scans a head line by line in byte order. `startLine` and `header` see each line as soon as its
 * CRLF arrives and may refuse it; the first problem in byte order wins. The head is decoded as
 * latin1 once (one character per byte), so indices are byte offsets.
 */
function scanHead(
  buf: Buffer,
  limits: HeadLimits | undefined,
  startLine: (line: string) => HeadError | undefined,
  header: (lowerName: string, value: string) => HeadError | undefined,
): HeadScan {
  const maxHeadBytes = limits?.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES;
  const maxHeaders = limits?.maxHeaders ?? DEFAULT_MAX_HEADERS;
  const limit = Math.min(buf.length, maxHeadBytes);
  const s = buf.toString('latin1', 0, limit);
  const headers: Array<[string, string]> = [];
  let lineStart = 0;
  let first = true;
  // Jump from LF to LF (native search); a line is checked once its LF has arrived within the limit.
  for (let lf = s.indexOf('\n'); lf !== -1; lf = s.indexOf('\n', lineStart)) {
    const end = lf - 1;
    const cr = s.indexOf('\r', lineStart);
    if (cr !== -1 && cr < end) return requestError(400, 'bare-cr', 'the head contains a CR that does not end a line');
    if (lf === lineStart || s.charCodeAt(end) !== CR) return requestError(400, 'bare-lf', 'a line ends in a bare LF; HTTP lines end in CRLF');
    if (first) {
      if (end === lineStart) return requestError(400, 'bad-request-line', 'the head starts with an empty line');
      // Control characters in the first line are the start-line checker's to name (an authority's go through parseAuthority).
      const problem = startLine(s.slice(lineStart, end));
      if (problem !== undefined) return problem;
      first = false;
    } else if (end === lineStart) {
      return { state: 'done', headers, headLength: lf + 1 };
    } else {
      if (headers.length >= maxHeaders) return requestError(431, 'too-many-headers', `the request has more than ${maxHeaders} header lines`);
      const parsed = parseHeaderLine(s, lineStart, end);
      if (parsed.state === 'error') return parsed;
      const problem = header(parsed.name.toLowerCase(), parsed.value);
      if (problem !== undefined) return problem;
      headers.push([parsed.name, parsed.value]);
    }
    lineStart = lf + 1;
  }
  // No further LF: a CR that is followed by anything but LF is already wrong.
  const cr = s.indexOf('\r', lineStart);
  if (cr !== -1 && cr + 1 < s.length) return requestError(400, 'bare-cr', 'the head contains a CR that does not end a line');
  if (buf.length >= maxHeadBytes) return requestError(431, 'head-too-large', `the request head is longer than ${maxHeadBytes} bytes`);
  return { state: 'incomplete' };
}

function parseHeaderLine(s: string, start: number, end: number): HeadError | { state: 'ok'; name: string; value: string } {
  const c0 = s.charCodeAt(start);
  if (c0 === 0x20 || c0 === 0x09) return requestError(400, 'obs-fold', 'a header line starts with whitespace (obs-fold), which is not accepted');
  let colon = start;
  while (colon < end && TOKEN[s.charCodeAt(colon)] === 1) colon++;
  if (colon === end || s.charCodeAt(colon) !== 0x3a) return requestError(400, 'bad-header-name', 'a header name is not a token followed directly by a colon');
  if (colon === start) return requestError(400, 'bad-header-name', 'a header line has an empty name');
  let vs = colon + 1;
  let ve = end;
  while (vs < ve && (s.charCodeAt(vs) === 0x20 || s.charCodeAt(vs) === 0x09)) vs++;
  while (ve > vs && (s.charCodeAt(ve - 1) === 0x20 || s.charCodeAt(ve - 1) === 0x09)) ve--;
  const value = s.slice(vs, ve);
  if (FIELD_CONTROL.test(value)) return requestError(400, 'bad-header-value', 'a header value contains a control character');
  return { state: 'ok', name: s.slice(start, colon), value };
}

function sanitiseReason(reason: string): string {
  return reason.slice(0, MAX_REASON_LENGTH).replace(/[^A-Za-z0-9._-]/g, '-');
}

const MAX_HINTS = 8;

/** At most MAX_HINTS words of letters, digits and . _ : - (anything else becomes -), space-separated. */
function sanitiseHints(hints: readonly string[]): string {
  return hints
    .slice(0, MAX_HINTS)
    .map((hint) => hint.slice(0, MAX_REASON_LENGTH).replace(/[^A-Za-z0-9._:-]/g, '-'))
    .filter((hint) => hint !== '')
    .join(' ');
}

/** Control characters (C0, DEL, C1) and line/paragraph separators become spaces; the result is trimmed and bounded. */
function sanitiseMessage(message: string): string {
  // eslint-disable-next-line no-control-regex
  return message.slice(0, MAX_MESSAGE_LENGTH).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ').trim();
}

