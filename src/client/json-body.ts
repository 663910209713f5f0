/**
 * The JSON request body both local HTTP servers of the client (the agent's socket API and the app page) read, and the
 * error they answer with when a request is wrong: one reader, so a limit or a check fixed here holds for both.
 */
import type { IncomingMessage } from 'node:http';

/** A request the caller got wrong: answered with `status` and `code`, never logged as a failure of ours. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The body of a JSON request as an object, read up to `maxBytes`; anything else is an HttpError (413, 415 or 400). */
export async function readJsonObject(req: IncomingMessage, maxBytes: number): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'] ?? '';
  if (!type.startsWith('application/json')) throw new HttpError(415, 'BAD_REQUEST', 'send JSON (content-type: application/json)');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw new HttpError(413, 'BAD_REQUEST', 'request body too large');
    chunks.push(chunk);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'BAD_REQUEST', 'the body is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new HttpError(400, 'BAD_REQUEST', 'the body must be a JSON object');
  return parsed as Record<string, unknown>;
}
