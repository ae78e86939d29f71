/**
 * afhub in JupyterLab: a status-bar item with the quota left for the group this server is
 * charged to, and a warning notification with the time of the stop when a budget has run
 * out. Both come from the server extension's GET /afhub/api/quota (afhub_server), polled
 * every 30 s with the page's own credentials.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

/** How often the quota is asked for (ms). */
const POLL_MS = 30_000;

interface IStop {
  group: string;
  stops_at: string;
  message: string;
}

interface ILimit {
  group: string;
  label: string;
  left: number;
  limit_value: number;
  resets_at: string | null;
}

interface IQuota {
  headline: string;
  charged_group: string;
  limits: ILimit[];
  stop: IStop | null;
}

/** "22:31 UTC": the same in every browser, whatever its time zone. */
export function utcTime(iso: string): string {
  return new Date(iso).toISOString().slice(11, 16) + ' UTC';
}

/** The warning shown before a budget stop. */
export function stopMessage(stop: IStop): string {
  const minutes = Math.max(
    0,
    Math.round((new Date(stop.stops_at).getTime() - Date.now()) / 60_000)
  );
  return (
    `afhub: the budget of group ${stop.group} is spent; this server will be stopped at ` +
    `${utcTime(stop.stops_at)} (in about ${minutes} min). Save your work now.`
  );
}

async function fetchQuota(
  settings: ServerConnection.ISettings
): Promise<IQuota> {
  const url = URLExt.join(settings.baseUrl, 'afhub', 'api', 'quota');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  let body: any = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new Error(
      (body && (body.error || body.message)) || `HTTP ${response.status}`
    );
  }
  return body as IQuota;
}

/** The status-bar item. */
class QuotaItem extends Widget {
  constructor() {
    super();
    this.id = 'afhub-quota';
    this.addClass('afhub-QuotaItem');
    this.node.textContent = 'afhub: quota…';
  }

  display(quota: IQuota): void {
    const stop = quota.stop;
    this.node.textContent = stop
      ? `afhub: ${quota.charged_group}: stop at ${utcTime(stop.stops_at)}`
      : quota.headline;
    this.node.title = quota.limits
      .map(
        l =>
          `${l.group}: ${l.left} of ${l.limit_value} ${l.label} left` +
          (l.resets_at ? ` (resets ${l.resets_at})` : '')
      )
      .join('\n');
    this.toggleClass('afhub-mod-warning', stop !== null);
  }

  fail(reason: string): void {
    this.node.textContent = 'afhub: quota unknown';
    this.node.title = reason;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'afhub-lab:quota',
  description: 'The quota left and any pending budget stop, in the status bar.',
  autoStart: true,
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    const item = new QuotaItem();
    if (statusBar) {
      statusBar.registerStatusItem('afhub-lab:quota', {
        item,
        align: 'left',
        rank: 1000
      });
    } else {
      app.shell.add(item, 'top', { rank: 1000 });
    }
    const settings = app.serviceManager.serverSettings;
    let warnedFor: string | null = null;
    let notice: string | null = null;
    const poll = async (): Promise<void> => {
      try {
        const quota = await fetchQuota(settings);
        item.display(quota);
        const stop = quota.stop;
        if (stop && stop.stops_at !== warnedFor) {
          warnedFor = stop.stops_at;
          if (notice) {
            Notification.dismiss(notice);
          }
          notice = Notification.warning(stopMessage(stop), { autoClose: false });
        } else if (!stop && notice) {
          Notification.dismiss(notice);
          notice = null;
          warnedFor = null;
        }
      } catch (error) {
        item.fail(error instanceof Error ? error.message : String(error));
      }
    };
    void poll();
    window.setInterval(() => void poll(), POLL_MS);
  }
};

export default plugin;
