/**
 * A user's home directory for tests that run the real client CLI, its agent and kubectl as that user: HOME (0700),
 * the client's home at its default ~/.config/causeway (so kubectl's exec plugin finds it through HOME alone), and
 * ~/.kube for the kubeconfig (not written here: each test puts in it what the user already had).
 */
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface UserHome {
  /** $HOME of the CLI, the agent and kubectl. */
  userHome: string;
  /** The client's home: ~/.config/causeway. */
  home: string;
  /** ~/.kube/config. */
  kubeconfig: string;
}

export async function makeUserHome(userHome: string): Promise<UserHome> {
  await mkdir(userHome, { mode: 0o700 });
  await chmod(userHome, 0o700);
  const home = join(userHome, '.config', 'causeway');
  await mkdir(home, { recursive: true, mode: 0o700 });
  const kubeDir = join(userHome, '.kube');
  await mkdir(kubeDir, { recursive: true, mode: 0o700 });
  return { userHome, home, kubeconfig: join(kubeDir, 'config') };
}
