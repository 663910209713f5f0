/** A PrincipalDirectory over lists of users and devices, indexed once. */
import type { DeviceState, PrincipalDirectory, PrincipalState, UserState } from './types.ts';

/** Ids are exact; a repeated id keeps its first entry. The lists are not copied: treat them as immutable. */
export function directoryFromState(state: PrincipalState): PrincipalDirectory {
  const users = new Map<string, UserState>();
  for (const user of state.users) if (!users.has(user.id)) users.set(user.id, user);
  const devices = new Map<string, DeviceState>();
  for (const device of state.devices) if (!devices.has(device.id)) devices.set(device.id, device);
  return {
    user: (id) => users.get(id),
    device: (id) => devices.get(id),
  };
}
