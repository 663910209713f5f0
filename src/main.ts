/**
 * The `causeway` executable. Parses argv and hands off to the chosen part's command module.
 * Only this file and each part's `command.ts` read the environment, argv or files (DESIGN.md §6).
 */
// First, before anything allocates: V8 settings for every part (see the module).
import './v8-flags.ts';
import { Command, CommanderError } from 'commander';
import { CausewayError, UserError, errorMessage } from './lib/errors.ts';
import { registerAccessTierCommand } from './access-tier/command.ts';
import { registerProxyCommand } from './client/command.ts';
import { registerConnectorCommand } from './connector/command.ts';
import { registerServerCommand } from './control-plane/command.ts';
import { registerAdminCommands } from './admin-cli/index.ts';
import { registerCaCommands } from './pki-command.ts';
import { registerQuickstartCommand } from './quickstart.ts';

const program = new Command('causeway')
  .description('Zero-trust access to the Kubernetes API and private TCP services, without a VPN')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

// Each part registers its own subcommands.
registerCaCommands(program);
registerQuickstartCommand(program);
registerProxyCommand(program);
registerServerCommand(program);
registerAccessTierCommand(program);
registerConnectorCommand(program);
registerAdminCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  if (err instanceof UserError) {
    process.stderr.write(`causeway: ${err.message} (${err.code})\n`);
    process.exit(2);
  }
  if (err instanceof CausewayError) {
    process.stderr.write(`causeway: ${err.message} (${err.code})\n`);
    process.exit(1);
  }
  process.stderr.write(`causeway: unexpected error: ${errorMessage(err)}\nThis is a bug; please report it with the command you ran.\n`);
  process.exit(1);
}
