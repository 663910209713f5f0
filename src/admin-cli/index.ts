/**
 * The admin commands of `causeway`: apply, get, delete, events, join-token, token, user, device. They are
 * clients of the control plane's HTTP API only (see client.ts for where the server, token and CA
 * come from) and import nothing from src/control-plane.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { AdminIo } from './client.ts';
import { registerDeviceCommands } from './devices.ts';
import { registerEventCommands } from './events.ts';
import { registerObjectCommands } from './objects.ts';
import { registerSessionCommands } from './sessions.ts';
import { registerTokenCommands } from './tokens.ts';
import { registerUserCommands } from './users.ts';

export type { AdminIo } from './client.ts';

const defaultIo: AdminIo = {
  env: process.env,
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  readFile: (path) => readFile(path, 'utf8'),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  },
  now: () => Date.now(),
};

/** The flags every admin command takes to reach the server. */
function connectionOptions(command: Command): Command {
  return command
    .option('--server <url>', 'the control plane (default: $CAUSEWAY_SERVER)')
    .option('--token-file <file>', 'a file holding the API token (default: $CAUSEWAY_TOKEN)')
    .option('--ca-file <file>', 'the CA certificate to trust the server by (default: $CAUSEWAY_CA_FILE, else the system CAs)');
}

export function registerAdminCommands(program: Command, io: Partial<AdminIo> = {}): void {
  const deps: AdminIo = { ...defaultIo, ...io };
  registerObjectCommands(program, deps, connectionOptions);
  registerEventCommands(program, deps, connectionOptions);
  registerTokenCommands(program, deps, connectionOptions);
  registerUserCommands(program, deps, connectionOptions);
  registerDeviceCommands(program, deps, connectionOptions);
  registerSessionCommands(program, deps, connectionOptions);
}
