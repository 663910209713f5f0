/**
 * The `causeway` executable. Parses argv and hands off to the chosen part's command module.
 * Only this file and each part's `command.ts` read the environment, argv or files (DESIGN.md §6).
 *
 * Command modules are imported lazily: argv names the command, and only the module that registers
 * it is loaded (the server's pulls in fastify, kysely and pg; the quickstart nearly everything).
 * `causeway kube-credential` runs on every kubectl command, so it must start in a fraction of the
 * time loading all of them takes. A command name not listed here (help, a typo, a command added to
 * a module without updating the list) loads every module, so commander can answer as before.
 */
// First, before anything allocates: V8 settings for every part (see the module).
import './v8-flags.ts';
import { Command, CommanderError } from 'commander';
import { CausewayError, UserError, errorMessage } from './lib/errors.ts';

type Register = (program: Command) => unknown;

/** Every command module: the top-level commands it registers, and how to load its register function. */
const COMMAND_MODULES: ReadonlyArray<{ commands: readonly string[]; load: () => Promise<Register> }> = [
  { commands: ['ca'], load: async () => (await import('./pki-command.ts')).registerCaCommands },
  { commands: ['quickstart'], load: async () => (await import('./quickstart.ts')).registerQuickstartCommand },
  { commands: ['proxy'], load: async () => (await import('./client/command.ts')).registerProxyCommand },
  { commands: ['login', 'logout', 'whoami', 'kube-credential'], load: async () => (await import('./client/identity-command.ts')).registerIdentityCommands },
  { commands: ['agent', 'connect', 'disconnect', 'status', 'app'], load: async () => (await import('./client/agent-command.ts')).registerAgentCommands },
  { commands: ['services', 'kubeconfig'], load: async () => (await import('./client/catalog-command.ts')).registerCatalogCommands },
  { commands: ['server'], load: async () => (await import('./control-plane/command.ts')).registerServerCommand },
  { commands: ['access-tier'], load: async () => (await import('./access-tier/command.ts')).registerAccessTierCommand },
  { commands: ['connector'], load: async () => (await import('./connector/command.ts')).registerConnectorCommand },
  { commands: ['kube-proxy'], load: async () => (await import('./kube-proxy/command.ts')).registerKubeProxyCommand },
  { commands: ['apply', 'get', 'delete', 'events', 'sessions', 'join-token', 'token', 'user', 'device'], load: async () => (await import('./admin-cli/index.ts')).registerAdminCommands },
  // `device` is shared: the admin's (list, show NAME, ban, ...) and this machine's (report, show); both load, the
  // client's after the admin's, adding to the `device` command (src/lib/cli/device-group.ts).
  { commands: ['device'], load: async () => (await import('./client/device-command.ts')).registerDeviceCommands },
];

/** The modules to load for this argv: those that register its command, else all of them. */
function modulesFor(argv: readonly string[]): typeof COMMAND_MODULES {
  const name = argv[2];
  if (name === undefined || name.startsWith('-')) return COMMAND_MODULES;
  const owners = COMMAND_MODULES.filter((m) => m.commands.includes(name));
  return owners.length === 0 ? COMMAND_MODULES : owners;
}

const program = new Command('causeway')
  .description('Zero-trust access to the Kubernetes API and private TCP services, without a VPN')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

try {
  // Each part registers its own subcommands, in the order `causeway help` lists them.
  for (const register of await Promise.all(modulesFor(process.argv).map((m) => m.load()))) register(program);
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
