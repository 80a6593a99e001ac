/* gt-manager.h: the supervisor: one worker process per config file, restarts, reload/restart/stop. */
#pragma once

#include <gio/gio.h>
#include "gt-config.h"

G_BEGIN_DECLS

#define GT_MANAGER_ERROR (gt_manager_error_quark ())
GQuark gt_manager_error_quark (void);

typedef enum
{
  GT_MANAGER_ERROR_NOT_RUNNING, /* no manager (pid file missing, stale or not a gt) */
  GT_MANAGER_ERROR_RUNNING,     /* another manager already owns the runtime dir */
  GT_MANAGER_ERROR_NO_CONFIG,   /* nothing valid to run */
  GT_MANAGER_ERROR_TIMEOUT,     /* the manager did not answer in time */
  GT_MANAGER_ERROR_FAILED,
  GT_MANAGER_ERROR_NO_UNIT,     /* no configuration of that name */
  GT_MANAGER_ERROR_BAD_NAME,    /* a name that cannot be a new configuration file */
} GtManagerErrorEnum;

/* Defaults; the environment variables GT_MANAGER_STOP_TIMEOUT and GT_MANAGER_READY_TIMEOUT (Go
 * durations, "30s") override them in gt_manager_run. */
#define GT_MANAGER_DEFAULT_DEPTH 3
#define GT_MANAGER_DEFAULT_STOP_TIMEOUT_MS (30 * 1000)
#define GT_MANAGER_DEFAULT_READY_TIMEOUT_MS (15 * 1000)
#define GT_MANAGER_MAX_CONFIG_SIZE (10 * 1024 * 1024)

/* One configuration file found by a scan. */
typedef struct
{
  char *path;        /* as found (DIR/sub/x.yaml) */
  GtConfigKind kind; /* UNKNOWN when it could not be classified */
  char *checksum;    /* SHA-256 of the contents, NULL when unreadable */
  GError *error;     /* why it cannot run ("FILE:LINE:COLUMN: ..."), NULL when valid */
  /* Server listeners of its config model: gt_listener_info()->key ("addr", "tlsAddr",
   * "sniAddr") → normalized "host:port" (gt_listener_get_addr). */
  GHashTable *listen_addrs;
} GtManagerEntry;

void gt_manager_entry_free (GtManagerEntry *entry);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtManagerEntry, gt_manager_entry_free)

/* Scans `path`: a file gives one entry; a directory gives one entry per *.yaml / *.yml file down
 * to `depth` levels (the directory itself is level 1; 0 = unlimited), sorted by path. Files over
 * GT_MANAGER_MAX_CONFIG_SIZE are skipped with a warning. Every entry is classified and validated
 * with the config loader (entry->error set when invalid). Returns NULL with error only when
 * `path` itself cannot be read. */
GPtrArray *gt_manager_scan (const char *path, guint depth, GError **error);

#define GT_TYPE_MANAGER (gt_manager_get_type ())
G_DECLARE_FINAL_TYPE (GtManager, gt_manager, GT, MANAGER, GObject)

GtManager *gt_manager_new (const char *path, guint depth);
void gt_manager_set_stop_timeout (GtManager *self, guint64 ms);
void gt_manager_set_ready_timeout (GtManager *self, guint64 ms);
/* Keep running with no valid configuration (one can be added with gt_manager_set_config). */
void gt_manager_set_allow_empty (GtManager *self, gboolean allow_empty);
/* Writes the pid file, scans, starts the workers, handles signals. FALSE when another manager
 * runs or nothing valid can be started. */
gboolean gt_manager_start (GtManager *self, GError **error);
/* Asynchronous commands (what SIGHUP / SIGUSR2 / SIGTERM do). */
void gt_manager_reload (GtManager *self);
void gt_manager_restart (GtManager *self);
void gt_manager_stop (GtManager *self);
/* TRUE once every worker has stopped after gt_manager_stop; emits "stopped" then. */
gboolean gt_manager_is_stopped (GtManager *self);
guint gt_manager_get_n_running (GtManager *self);

/* Control API (used by the D-Bus service and the web admin). A unit is one configuration file,
 * named by its path relative to the config directory ("client.yaml", "sub/a.yaml"). */
typedef enum
{
  GT_MANAGER_UNIT_STARTING,     /* worker started, not ready yet */
  GT_MANAGER_UNIT_RUNNING,      /* worker ready (a client: at least one tunnel up) */
  GT_MANAGER_UNIT_RECONNECTING, /* client worker whose tunnels are down and retrying */
  GT_MANAGER_UNIT_FAILED,       /* invalid config, or no worker and waiting to restart one */
  GT_MANAGER_UNIT_STOPPED,      /* stopped through gt_manager_stop_unit */
} GtManagerUnitState;

const char *gt_manager_unit_state_to_string (GtManagerUnitState state);

typedef struct
{
  char *name;
  char *path;
  GtConfigKind kind;        /* UNKNOWN for a file that cannot be classified */
  GtManagerUnitState state;
  char *error;              /* last error ("FILE:LINE:COLUMN: ...", "exited with code 1"), or NULL */
  GPid pid;                 /* the worker serving it, 0 when none */
  GtTraffic traffic;        /* as last reported by the worker (zero without one) */
  GVariant *details;        /* its connections and streams, GT_WORKER_DETAILS_TYPE (never NULL) */
} GtManagerUnitInfo;

void gt_manager_unit_info_free (GtManagerUnitInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtManagerUnitInfo, gt_manager_unit_info_free)

/* Every configuration file of the last scan (valid or not), sorted by name. Emits
 * "unit-changed" (name) whenever what this returns for a unit may have changed, and
 * "units-changed" when files appeared or went. */
GPtrArray *gt_manager_list_units (GtManager *self);
GtManagerUnitInfo *gt_manager_get_unit (GtManager *self, const char *name);
/* Stop a unit's worker and keep it stopped across reloads; start it again. GT_MANAGER_ERROR_
 * NO_UNIT for an unknown name. */
gboolean gt_manager_stop_unit (GtManager *self, const char *name, GError **error);
gboolean gt_manager_start_unit (GtManager *self, const char *name, GError **error);
/* The config directory (or the single file) the manager runs. */
const char *gt_manager_get_path (GtManager *self);
/* "idle", "starting", "running", "reloading", "stopping", "stopped"; "phase-changed" tells. */
const char *gt_manager_get_phase (GtManager *self);

/* Checks a config document the way the manager does before running it (the YAML loader and
 * validation). Returns its kind, or UNKNOWN with error ("NAME:LINE:COLUMN: message", GT_CONFIG_
 * ERROR) and *issue_out set when given. */
GtConfigKind gt_manager_check_config (const char *name, const char *text, gssize len,
                                      GtConfigIssue **issue_out, GError **error);
/* A unit's document with its secrets replaced by GT_CONFIG_SECRET_PLACEHOLDER. */
char *gt_manager_get_config (GtManager *self, const char *name, GError **error);
/* Checks text, restores the placeholders from the current file, writes it (mode 0600) and
 * reloads. A new name creates a file in the config directory (a plain file name ending in .yaml
 * or .yml). */
gboolean gt_manager_set_config (GtManager *self, const char *name, const char *text,
                                GtConfigIssue **issue_out, GError **error);
/* gt_manager_set_config in two steps, for a caller that changes the document in between (the
 * D-Bus service moves a client's secret to the keyring): the checked document with its
 * placeholders restored, its file and kind (NULL with error as above); then writing it (mode
 * 0600) and reloading. */
char *gt_manager_prepare_config (GtManager *self, const char *name, const char *text,
                                 char **path_out, GtConfigKind *kind_out,
                                 GtConfigIssue **issue_out, GError **error);
gboolean gt_manager_write_config (GtManager *self, const char *name, const char *path,
                                  const char *full, GError **error);

/* What a worker tells its manager on NOTIFY_SOCKET besides READY=1 and STATUS= (ignored by
 * systemd): GT_STATE=running|reconnecting, GT_ERROR=text, this traffic line and the details line
 * of gt-worker-report.h. */
char *gt_manager_worker_traffic_line (const GtTraffic *traffic);
/* TRUE in a worker started by a manager (GT_MANAGER_PID set). */
gboolean gt_manager_is_worker (void);

/* `gt -c DIR [--depth N]`, `gt --manager -c FILE`: runs a manager until stopped; returns the exit
 * code (0 after a stop by signal, 1 on startup failure with error set). */
int gt_manager_run (const char *path, guint depth, GError **error);
/* The same with a manager made by the caller, which may add its own services first: runs the
 * main loop until the manager stopped. */
int gt_manager_run_full (GtManager *self, GError **error);

/* `gt -s reload|restart|stop`: signals the running manager and waits (bounded) for it to finish
 * the command. Returns 0 on success, 1 with error set otherwise (message fit for the user). */
int gt_manager_send_signal (const char *name, GError **error);

/* Runtime directory: $GT_RUNTIME_DIR if set, else $XDG_RUNTIME_DIR/gt, else <tmp>/gt-<uid>;
 * created 0700 when create. */
char *gt_manager_runtime_dir (gboolean create, GError **error);

/* pid file helpers (exposed for tests). The file holds "PID START_TIME\n" where START_TIME is
 * field 22 of /proc/PID/stat, so a recycled pid is not mistaken for the manager. */
gboolean gt_manager_pid_file_write (const char *path, GError **error);
/* The pid of a live gt manager recorded in `path`, or 0 with error set. */
GPid gt_manager_pid_file_read (const char *path, GError **error);

G_END_DECLS
