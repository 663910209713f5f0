/**
 * The Command Center shell: loads the console session (or sends the browser to the login page), then
 * shows the top navigation (Directory, Private access, Trust, Activity), the section's pages and the page.
 */
import { useEffect, useState } from 'react';
import type { ReactNode } from 'react';
import { errorMessage, goToLogin, loadSession, logout, setCsrfToken } from './api.ts';
import type { ConsoleSession } from './api.ts';
import { Link, Router, useRouter } from './router.tsx';
import { Badge, Notice, SessionContext } from './ui.tsx';
import { UsersPage } from './pages/users.tsx';
import { DevicesPage } from './pages/devices.tsx';
import { RoleEditPage, RolesPage } from './pages/roles.tsx';
import { PoliciesPage, PolicyEditPage } from './pages/policies.tsx';
import { ServiceEditPage, ServicesPage } from './pages/services.tsx';
import { PeersPage } from './pages/peers.tsx';
import { TrustProfilesPage } from './pages/trust-profiles.tsx';
import { DeviceManagersPage } from './pages/device-managers.tsx';
import { SessionsPage } from './pages/sessions.tsx';
import { EventsPage } from './pages/events.tsx';
import { AuditPage } from './pages/audit.tsx';
import { KubeEventsPage } from './pages/kube-events.tsx';
import { YamlEditPage } from './pages/yaml-edit.tsx';

interface PageEntry {
  path: string;
  title: string;
}

interface Section {
  title: string;
  pages: PageEntry[];
}

export const SECTIONS: Section[] = [
  { title: 'Directory', pages: [{ path: '/users', title: 'Users' }, { path: '/devices', title: 'Devices' }, { path: '/roles', title: 'Roles' }] },
  { title: 'Private access', pages: [{ path: '/policies', title: 'Policies' }, { path: '/services', title: 'Services' }, { path: '/network', title: 'Access tiers & connectors' }] },
  { title: 'Trust', pages: [{ path: '/trust-profiles', title: 'Trust profiles' }, { path: '/device-managers', title: 'Device managers' }] },
  { title: 'Activity', pages: [{ path: '/sessions', title: 'Live sessions' }, { path: '/events', title: 'Events' }, { path: '/kubernetes', title: 'Kubernetes' }, { path: '/audit', title: 'Audit log' }] },
];

function sectionOf(path: string): Section {
  return SECTIONS.find((s) => s.pages.some((p) => path === p.path || path.startsWith(`${p.path}/`))) ?? SECTIONS[0];
}

function route(path: string): ReactNode {
  const parts = path.split('/').filter((p) => p !== '').map((p) => decodeURIComponent(p));
  const [page, name, extra] = parts;
  switch (page) {
    case undefined:
    case 'users': return <UsersPage />;
    case 'devices': return <DevicesPage />;
    case 'roles': return name === undefined ? <RolesPage /> : <RoleEditPage name={name === 'new' ? undefined : name} />;
    case 'policies': return name === undefined ? <PoliciesPage /> : <PolicyEditPage name={name === 'new' ? undefined : name} />;
    case 'services': return name === undefined ? <ServicesPage /> : <ServiceEditPage name={name === 'new' ? undefined : name} />;
    case 'network': {
      const kind = name === 'access-tier' ? 'AccessTier' : name === 'connector' ? 'Connector' : undefined;
      if (name === undefined) return <PeersPage />;
      return kind === undefined || extra === undefined ? <NotFound /> : <YamlEditPage kind={kind} name={extra === 'new' ? undefined : extra} back="/network" />;
    }
    case 'trust-profiles': return name === undefined ? <TrustProfilesPage /> : <YamlEditPage kind="TrustProfile" name={name === 'new' ? undefined : name} back="/trust-profiles" />;
    case 'device-managers': return name === undefined ? <DeviceManagersPage /> : <YamlEditPage kind="DeviceManager" name={name === 'new' ? undefined : name} back="/device-managers" />;
    case 'sessions': return <SessionsPage />;
    case 'events': return <EventsPage />;
    case 'kubernetes': return <KubeEventsPage />;
    case 'audit': return <AuditPage />;
    default: return <NotFound />;
  }
}

function NotFound() {
  return (
    <div className="empty-page">
      <h1>Page not found</h1>
      <p className="muted">There is no console page at this address.</p>
      <Link to="/users" className="button button-primary">Go to Users</Link>
    </div>
  );
}

function Shell({ session }: { session: ConsoleSession }) {
  const { path } = useRouter();
  const section = sectionOf(path);
  const [menu, setMenu] = useState(false);
  const current = section.pages.find((p) => path === p.path || path.startsWith(`${p.path}/`));
  useEffect(() => {
    document.title = `${current?.title ?? 'Command Center'} · Causeway`;
  }, [current]);
  return (
    <div className="shell">
      <header className="topbar">
        <div className="topbar-inner">
          <Link to="/users" className="brand" aria-label="Causeway Command Center">
            <span className="brand-mark" aria-hidden="true" />
            <span className="brand-name">Causeway</span>
            <span className="brand-sub">Command Center</span>
          </Link>
          <nav className="sections" aria-label="Sections">
            {SECTIONS.map((s) => (
              <Link key={s.title} to={s.pages[0].path} className={`section-link ${s === section ? 'active' : ''}`} aria-current={s === section ? 'true' : undefined}>{s.title}</Link>
            ))}
          </nav>
          <div className="user-menu">
            <button type="button" className="user-button" onClick={() => setMenu((m) => !m)} aria-expanded={menu}>
              <span className="avatar" aria-hidden="true">{session.user.name.slice(0, 1).toUpperCase()}</span>
              <span className="user-name">{session.user.name}</span>
              <Badge tone={session.role === 'admin' ? 'violet' : 'neutral'}>{session.role ?? 'no role'}</Badge>
            </button>
            {menu ? (
              <div className="user-dropdown">
                <div className="user-dropdown-head">
                  <strong>{session.user.name}</strong>
                  <span className="muted small">{session.user.email ?? 'no email'}</span>
                  <span className="muted small">{session.role === 'admin' ? (session.kinds === null || session.kinds.length === 0 ? 'Admin for everything' : `Admin for ${session.kinds.join(', ')}`) : session.role === 'viewer' ? 'Viewer: reads everything, changes nothing' : 'No console role'}</span>
                </div>
                <button
                  type="button"
                  className="button button-ghost button-block"
                  onClick={() => { void logout().finally(() => window.location.assign('/console/login')); }}
                >
                  Log out
                </button>
              </div>
            ) : null}
          </div>
        </div>
        <nav className="subnav" aria-label={section.title}>
          <div className="subnav-inner">
            {section.pages.map((p) => (
              <Link key={p.path} to={p.path} className={`subnav-link ${p === current ? 'active' : ''}`} aria-current={p === current ? 'page' : undefined}>{p.title}</Link>
            ))}
          </div>
        </nav>
      </header>
      <main className="content">
        {session.role === null ? <Notice tone="warning">Your account has no console role (no AdminBinding names you): the server refuses what you ask for.</Notice> : null}
        {route(path)}
      </main>
    </div>
  );
}

export function App() {
  const [state, setState] = useState<{ session?: ConsoleSession; error?: string }>({});
  useEffect(() => {
    loadSession().then(
      (session) => {
        if (session === null) {
          goToLogin();
          return;
        }
        setCsrfToken(session.csrfToken);
        setState({ session });
      },
      (err: unknown) => setState({ error: errorMessage(err) }),
    );
  }, []);
  if (state.error !== undefined) return <div className="boot"><Notice tone="error">The console could not start: {state.error}</Notice></div>;
  if (state.session === undefined) return <div className="boot"><span className="loading">Loading the Command Center…</span></div>;
  return (
    <SessionContext.Provider value={state.session}>
      <Router>
        <Shell session={state.session} />
      </Router>
    </SessionContext.Provider>
  );
}
