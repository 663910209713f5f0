/**
 * What a person can do about each unmet factor, worded for their platform. Shown in the trust
 * explanation (`causeway whoami`, the API, the 403 page), so each says the concrete step.
 */
import type { FactorType } from '../spec/trust-profile.ts';

export type RemedyPlatform = 'linux' | 'macos' | 'windows' | 'other';

export interface RemedyContext {
  platform: RemedyPlatform;
  /** osVersion: the minimum that applies; fileExists: the path; processRunning: the name; crowdstrikeScore: the minimum. */
  target?: string;
  /** osUpdates: which check failed. */
  updates?: 'automatic' | 'pending';
}

type Remedies = Record<RemedyPlatform, string>;

function each(text: string, overrides: Partial<Remedies> = {}): Remedies {
  return { linux: text, macos: text, windows: text, other: text, ...overrides };
}

const FIREWALL = each('turn the firewall on', {
  linux: 'turn the firewall on (sudo ufw enable, or enable firewalld or an nftables input policy)',
  macos: 'turn the firewall on (System Settings › Network › Firewall)',
  windows: 'turn Windows Defender Firewall on for the domain, private and public profiles (Windows Security › Firewall & network protection)',
});

const DISK = each('encrypt the system disk', {
  linux: 'put the root filesystem on LUKS (dm-crypt) encryption; on most distributions this means reinstalling with "encrypt the disk" chosen',
  macos: 'turn on FileVault (System Settings › Privacy & Security › FileVault) and let it finish',
  windows: 'turn on BitLocker for the system drive (Settings › Privacy & security › Device encryption, or manage-bde -on C:) and let it finish',
});

const SCREEN_LOCK = each('turn on the screen lock', {
  linux: 'turn on the screen lock (gsettings set org.gnome.desktop.screensaver lock-enabled true, and an idle delay above 0)',
  macos: 'require a password after sleep or the screen saver (System Settings › Lock Screen)',
  windows: 'turn on the screen saver with "On resume, display logon screen" (Settings › Personalization › Lock screen)',
});

const UPDATES_AUTOMATIC = each('turn on automatic updates', {
  linux: 'turn on automatic updates (sudo apt install unattended-upgrades && sudo dpkg-reconfigure -plow unattended-upgrades, or dnf-automatic)',
  macos: 'turn on automatic updates (System Settings › General › Software Update › Automatic updates › Install macOS updates)',
  windows: 'turn on automatic updates (Settings › Windows Update; ask IT if a policy turned them off)',
});

const UPDATES_PENDING = each('install the pending updates', {
  linux: 'install the pending updates (sudo apt upgrade, or sudo dnf upgrade)',
  macos: 'install the pending updates (System Settings › General › Software Update, or softwareupdate --install --all)',
  windows: 'install the pending updates (Settings › Windows Update) and restart',
});

export function remedy(type: FactorType, context: RemedyContext): string {
  const p = context.platform;
  const target = context.target ?? '';
  switch (type) {
    case 'firewall':
      return FIREWALL[p];
    case 'diskEncryption':
      return DISK[p];
    case 'screenLock':
      return SCREEN_LOCK[p];
    case 'osUpdates':
      return context.updates === 'pending' ? UPDATES_PENDING[p] : UPDATES_AUTOMATIC[p];
    case 'osVersion':
      return `update the operating system to version ${target} or later`;
    case 'fileExists':
      return `restore ${target} (your organisation's device setup installs it; ask IT)`;
    case 'processRunning':
      return `start ${target}; it must be running (ask IT if it is not installed)`;
    case 'mdmPresent':
      return "enroll this device in your organisation's device management (ask IT)";
    case 'mdmCompliant':
      return 'fix what your device management reports as non-compliant (see the company portal), then let it sync';
    case 'crowdstrikeScore':
      return `raise the CrowdStrike Zero Trust Assessment score to ${target} or more (keep the Falcon sensor running and the OS updated; ask IT)`;
  }
}

/** For a factor whose value could not be read. */
export function unknownRemedy(type: FactorType, context: RemedyContext): string {
  if (type === 'mdmPresent' || type === 'mdmCompliant' || type === 'crowdstrikeScore') {
    return `your device manager has not reported on this device yet; ${remedy(type, context)}`;
  }
  return `the Causeway client could not check this: keep it running (causeway device report sends a report now); if it persists, ${remedy(type, context)}`;
}
