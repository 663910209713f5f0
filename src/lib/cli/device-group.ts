/**
 * `causeway device` is shared by two modules that are loaded independently: the client's commands
 * for this machine (src/client/device-command.ts: `device report`, `device show` without a name) and
 * the admin CLI's (src/admin-cli: `device list`, `device show NAME`, `device ban NAME`, ...).
 *
 * Both get the one `device` command from here (created by whichever registers first), and `show`
 * is registered once, as `show [name]`: without a name it runs the client's handler (this device),
 * with one the admin CLI's. Each side sets its handler; a side that is not loaded leaves a message
 * that says what to run instead.
 */
import type { Command } from 'commander';
import { UserError } from '../errors.ts';

export type ShowSelf = (flags: Record<string, unknown>) => Promise<void>;
export type ShowNamed = (name: string, flags: Record<string, unknown>) => Promise<void>;

interface Handlers {
  self?: ShowSelf;
  named?: ShowNamed;
  /** Options each side added to `show` (commander parses them all). */
}

const HANDLERS = Symbol.for('causeway.device-group.handlers');

type WithHandlers = Command & { [HANDLERS]?: Handlers };

export interface DeviceGroup {
  /** The `device` command, to add subcommands to. */
  device: Command;
  /** The shared `device show [name]` command, to add options to. */
  show: Command;
  /** What `device show` (no name) runs: this machine's device (the client). */
  onShowSelf(handler: ShowSelf): void;
  /** What `device show NAME` runs (the admin CLI). */
  onShowNamed(handler: ShowNamed): void;
  /** False when `show` was registered by someone not using this module: then the handlers are never called. */
  showShared: boolean;
}

export function deviceGroup(program: Command): DeviceGroup {
  const found: WithHandlers | undefined = program.commands.find((c) => c.name() === 'device');
  const device: WithHandlers = found ?? program.command('device').description("Devices: this machine's device and its trust (report, show); admins: list, show NAME, ban, unban, unregister, override");
  const handlers: Handlers = device[HANDLERS] ?? {};
  device[HANDLERS] = handlers;
  let show = device.commands.find((c) => c.name() === 'show');
  const showShared = show === undefined || (show as WithHandlers)[HANDLERS] === handlers;
  if (show === undefined) {
    show = device
      .command('show')
      .description("Without NAME: this machine's device, its trust level and what to fix. With NAME (admins): that device")
      .argument('[name]', 'a device id (admins)')
      .action(async (name: string | undefined, flags: Record<string, unknown>) => {
        if (name === undefined) {
          if (handlers.self === undefined) throw new UserError('BAD_FLAGS', 'name the device: causeway device show NAME');
          await handlers.self(flags);
          return;
        }
        if (handlers.named === undefined) throw new UserError('BAD_FLAGS', 'causeway device show without a name shows this machine\'s device');
        await handlers.named(name, flags);
      });
    (show as WithHandlers)[HANDLERS] = handlers;
  }
  return {
    device,
    show,
    showShared,
    onShowSelf: (handler) => {
      handlers.self = handler;
    },
    onShowNamed: (handler) => {
      handlers.named = handler;
    },
  };
}
