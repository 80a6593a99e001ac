/* gt-keyring.h: client secrets in the user's keyring (the Secret Service, through libsecret):
 * the manager stores there the secrets that come over D-Bus, a worker whose file says
 * `secret: "(keyring)"` reads its secret from there. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Whether the manager should try the keyring for new secrets: built with libsecret, and
 * $GT_KEYRING is not "off" (a headless system, or a keyring that would only prompt). */
gboolean gt_keyring_enabled (void);
/* Stores secret for the configuration file config_path (made absolute; label names name).
 * Gives up with G_IO_ERROR_TIMED_OUT after 10 s (a locked keyring waiting on a prompt). */
void gt_keyring_store_async (const char *config_path, const char *name, const char *secret,
                             GCancellable *cancellable, GAsyncReadyCallback callback,
                             gpointer user_data);
gboolean gt_keyring_store_finish (GAsyncResult *result, GError **error);
/* The secret stored for config_path; NULL with error when there is none (G_IO_ERROR_NOT_FOUND),
 * no keyring answers, or gt was built without libsecret (G_IO_ERROR_NOT_SUPPORTED). */
char *gt_keyring_lookup (const char *config_path, GError **error);

G_END_DECLS
