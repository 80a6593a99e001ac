/* gt-app-editor.c: the configuration editor: a form for the common settings of a client or a
 * server, rendered as YAML for the daemon, or the YAML document itself. */
#include "config.h"

#define G_LOG_DOMAIN "gt-app"

#include <glib/gi18n.h>
#include <string.h>

#include "gt-app-editor.h"
#include "gt-dbus-errors.h"

/* One service (client) or user (server): its rows. */
typedef struct
{
  AdwExpanderRow *expander;
  AdwEntryRow *a; /* service: local URL;    user: id */
  AdwEntryRow *b; /* service: host prefix;  user: secret (password row) */
  AdwEntryRow *c; /* service: remote port;  user: unused */
} Item;

struct _GtAppEditor
{
  AdwBin parent_instance;

  GtkStack *mode_stack;
  AdwPreferencesGroup *file_group;
  AdwEntryRow *name_row;
  AdwPreferencesGroup *client_group;
  AdwEntryRow *remote_row;
  AdwEntryRow *id_row;
  AdwEntryRow *secret_row;
  AdwPreferencesGroup *services_group;
  AdwPreferencesGroup *server_group;
  AdwEntryRow *addr_row;
  AdwEntryRow *tls_addr_row;
  AdwPreferencesGroup *users_group;
  GtkLabel *yaml_error;
  GtkTextView *yaml_view;

  GtConfigKind kind;
  gboolean is_new;
  GArray *services; /* Item */
  GArray *users;    /* Item */
  GHashTable *line_widgets; /* line of the last rendered form → GtkWidget* */
  GPtrArray *marked;        /* widgets marked with an error */
  GHashTable *group_descriptions; /* group → its description before an error replaced it */
};

G_DEFINE_FINAL_TYPE (GtAppEditor, gt_app_editor, ADW_TYPE_BIN)

static const char *
entry_text (AdwEntryRow *row)
{
  return gtk_editable_get_text (GTK_EDITABLE (row));
}

static void
set_text (AdwEntryRow *row, const char *text)
{
  gtk_editable_set_text (GTK_EDITABLE (row), text != NULL ? text : "");
}

static void
update_expander_title (AdwExpanderRow *expander, AdwEntryRow *first, const char *fallback)
{
  const char *text = entry_text (first);

  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (expander), *text ? text : fallback);
}

static void
service_changed_cb (GtkEditable *editable, gpointer user_data)
{
  update_expander_title (user_data, ADW_ENTRY_ROW (editable), _("New Service"));
}

static void
user_changed_cb (GtkEditable *editable, gpointer user_data)
{
  update_expander_title (user_data, ADW_ENTRY_ROW (editable), _("New User"));
}

static AdwEntryRow *
add_entry (AdwExpanderRow *expander, const char *title, gboolean password)
{
  GtkWidget *row = password ? adw_password_entry_row_new () : adw_entry_row_new ();

  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
  adw_expander_row_add_row (expander, row);
  return ADW_ENTRY_ROW (row);
}

static Item *
add_service (GtAppEditor *self)
{
  Item item = { 0 };

  item.expander = ADW_EXPANDER_ROW (adw_expander_row_new ());
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (item.expander), _("New Service"));
  item.a = add_entry (item.expander, _("Local Service (http://127.0.0.1:8080 or tcp://…)"), FALSE);
  item.b = add_entry (item.expander, _("Host Prefix (HTTP)"), FALSE);
  item.c = add_entry (item.expander, _("Remote TCP Port (TCP)"), FALSE);
  g_signal_connect (item.a, "changed", G_CALLBACK (service_changed_cb), item.expander);
  adw_preferences_group_add (self->services_group, GTK_WIDGET (item.expander));
  g_array_append_val (self->services, item);
  return &g_array_index (self->services, Item, self->services->len - 1);
}

static Item *
add_user (GtAppEditor *self)
{
  Item item = { 0 };

  item.expander = ADW_EXPANDER_ROW (adw_expander_row_new ());
  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (item.expander), _("New User"));
  item.a = add_entry (item.expander, _("Client ID"), FALSE);
  item.b = add_entry (item.expander, _("Secret"), TRUE);
  g_signal_connect (item.a, "changed", G_CALLBACK (user_changed_cb), item.expander);
  adw_preferences_group_add (self->users_group, GTK_WIDGET (item.expander));
  g_array_append_val (self->users, item);
  return &g_array_index (self->users, Item, self->users->len - 1);
}

static void
add_service_cb (GtAppEditor *self)
{
  adw_expander_row_set_expanded (add_service (self)->expander, TRUE);
}

static void
add_user_cb (GtAppEditor *self)
{
  adw_expander_row_set_expanded (add_user (self)->expander, TRUE);
}

static void
clear_items (AdwPreferencesGroup *group, GArray *items)
{
  for (guint i = 0; i < items->len; i++)
    adw_preferences_group_remove (group, GTK_WIDGET (g_array_index (items, Item, i).expander));
  g_array_set_size (items, 0);
}

static char *
remote_to_url (const GtRemote *r)
{
  gboolean v6 = strchr (r->host, ':') != NULL;

  return g_strdup_printf ("%s://%s%s%s:%u%s", r->scheme, v6 ? "[" : "", r->host, v6 ? "]" : "",
                          r->port, r->path != NULL ? r->path : "");
}

void
gt_app_editor_load (GtAppEditor *self, GtConfigKind kind, const char *name, const char *document,
                    const char *secret)
{
  GtkTextBuffer *buffer;

  g_return_if_fail (GT_IS_APP_EDITOR (self));

  gt_app_editor_clear_errors (self);
  clear_items (self->services_group, self->services);
  clear_items (self->users_group, self->users);
  self->kind = kind;
  self->is_new = name == NULL;
  set_text (self->name_row, name != NULL ? name : (kind == GT_CONFIG_KIND_SERVER ? "server.yaml"
                                                                                 : "client.yaml"));
  gtk_editable_set_editable (GTK_EDITABLE (self->name_row), self->is_new);
  for (AdwEntryRow **r = (AdwEntryRow *[]){ self->remote_row, self->id_row, self->secret_row,
                                            self->addr_row, self->tls_addr_row, NULL };
       *r != NULL; r++)
    set_text (*r, NULL);
  gtk_widget_set_visible (GTK_WIDGET (self->client_group), kind != GT_CONFIG_KIND_SERVER);
  gtk_widget_set_visible (GTK_WIDGET (self->services_group), kind != GT_CONFIG_KIND_SERVER);
  gtk_widget_set_visible (GTK_WIDGET (self->server_group), kind == GT_CONFIG_KIND_SERVER);
  gtk_widget_set_visible (GTK_WIDGET (self->users_group), kind == GT_CONFIG_KIND_SERVER);

  buffer = gtk_text_view_get_buffer (self->yaml_view);
  gtk_text_buffer_set_text (buffer, document != NULL ? document : "", -1);
  gtk_stack_set_visible_child_name (self->mode_stack, "form");

  if (kind == GT_CONFIG_KIND_CLIENT)
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();

      if (document != NULL && gt_client_config_load_data (config, document, -1, name, NULL, NULL))
        {
          if (config->remotes->len > 0)
            {
              g_autofree char *url = remote_to_url (config->remotes->pdata[0]);

              set_text (self->remote_row, url);
            }
          set_text (self->id_row, config->id);
          set_text (self->secret_row, secret != NULL ? secret : config->secret);
          for (guint i = 0; i < config->services->len; i++)
            {
              GtServiceConfig *s = config->services->pdata[i];
              Item *item = add_service (self);

              set_text (item->a, s->local_url);
              set_text (item->b, s->host_prefix);
              if (s->kind == GT_SERVICE_KIND_TCP && s->remote_tcp_port != 0)
                {
                  g_autofree char *port = g_strdup_printf ("%u", s->remote_tcp_port);

                  set_text (item->c, port);
                }
            }
        }
      else if (document != NULL)
        gtk_stack_set_visible_child_name (self->mode_stack, "yaml");
      else
        add_service (self);
    }
  else
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();

      if (document != NULL && gt_server_config_load_data (config, document, -1, name, NULL, NULL))
        {
          set_text (self->addr_row, config->addr);
          set_text (self->tls_addr_row, config->tls_addr);
          for (guint i = 0; i < config->users->len; i++)
            {
              GtUserConfig *u = config->users->pdata[i];
              Item *item = add_user (self);

              set_text (item->a, u->id);
              set_text (item->b, u->secret);
            }
        }
      else if (document != NULL)
        gtk_stack_set_visible_child_name (self->mode_stack, "yaml");
      else
        add_user (self);
    }
}

GtConfigKind
gt_app_editor_get_kind (GtAppEditor *self)
{
  g_return_val_if_fail (GT_IS_APP_EDITOR (self), GT_CONFIG_KIND_UNKNOWN);
  return self->kind;
}

char *
gt_app_editor_get_name (GtAppEditor *self)
{
  g_autofree char *name = NULL;

  g_return_val_if_fail (GT_IS_APP_EDITOR (self), NULL);

  name = g_strstrip (g_strdup (entry_text (self->name_row)));
  if (!g_str_has_suffix (name, ".yaml") && !g_str_has_suffix (name, ".yml"))
    return g_strconcat (name, ".yaml", NULL);
  return g_steal_pointer (&name);
}

/* A YAML double-quoted scalar (JSON string syntax, which YAML accepts). */
static void
append_quoted (GString *out, const char *text)
{
  g_string_append_c (out, '"');
  for (const char *c = text; *c != '\0'; c++)
    {
      if (*c == '"' || *c == '\\')
        g_string_append_printf (out, "\\%c", *c);
      else if ((guchar) *c < 0x20)
        g_string_append_printf (out, "\\u%04x", (guchar) *c);
      else
        g_string_append_c (out, *c);
    }
  g_string_append_c (out, '"');
}

/* Appends "INDENT KEY: "VALUE"\n" when value is not empty and remembers the line's widget. */
static void
emit (GtAppEditor *self, GString *out, guint *line, const char *indent, const char *key,
      AdwEntryRow *row, gboolean quote)
{
  const char *value = entry_text (row);
  g_autofree char *trimmed = g_strstrip (g_strdup (value));

  if (*trimmed == '\0')
    return;
  g_string_append_printf (out, "%s%s: ", indent, key);
  if (quote)
    append_quoted (out, trimmed);
  else
    g_string_append (out, trimmed);
  g_string_append_c (out, '\n');
  g_hash_table_insert (self->line_widgets, GUINT_TO_POINTER (*line), row);
  (*line)++;
}

static void
emit_line (GString *out, guint *line, const char *text)
{
  g_string_append (out, text);
  (*line)++;
}

static char *
render_form (GtAppEditor *self)
{
  GString *out = g_string_new (NULL);
  guint line = 1;

  g_hash_table_remove_all (self->line_widgets);
  if (self->kind == GT_CONFIG_KIND_SERVER)
    {
      emit_line (out, &line, "type: server\n");
      emit_line (out, &line, "options:\n");
      emit (self, out, &line, "  ", "addr", self->addr_row, TRUE);
      emit (self, out, &line, "  ", "tlsAddr", self->tls_addr_row, TRUE);
      if (self->users->len > 0)
        emit_line (out, &line, "users:\n");
      for (guint i = 0; i < self->users->len; i++)
        {
          Item *u = &g_array_index (self->users, Item, i);
          g_autofree char *id = g_strstrip (g_strdup (entry_text (u->a)));

          g_string_append (out, "  ");
          append_quoted (out, id);
          g_string_append (out, ":\n");
          g_hash_table_insert (self->line_widgets, GUINT_TO_POINTER (line), u->a);
          line++;
          if (*entry_text (u->b) == '\0')
            {
              /* No secret: the loader reports the user's line; "{}" keeps the mapping. */
              g_string_truncate (out, out->len - 1);
              g_string_append (out, " {}\n");
            }
          else
            {
              g_string_append (out, "    secret: ");
              append_quoted (out, entry_text (u->b));
              g_string_append_c (out, '\n');
              g_hash_table_insert (self->line_widgets, GUINT_TO_POINTER (line), u->b);
              line++;
            }
        }
      return g_string_free (out, FALSE);
    }

  emit_line (out, &line, "type: client\n");
  emit_line (out, &line, "options:\n");
  emit (self, out, &line, "  ", "remote", self->remote_row, TRUE);
  emit (self, out, &line, "  ", "id", self->id_row, TRUE);
  emit (self, out, &line, "  ", "secret", self->secret_row, TRUE);
  if (self->services->len > 0)
    emit_line (out, &line, "services:\n");
  for (guint i = 0; i < self->services->len; i++)
    {
      Item *s = &g_array_index (self->services, Item, i);
      g_autofree char *local = g_strstrip (g_strdup (entry_text (s->a)));

      g_string_append (out, "  - local: ");
      append_quoted (out, local);
      g_string_append_c (out, '\n');
      g_hash_table_insert (self->line_widgets, GUINT_TO_POINTER (line), s->a);
      line++;
      emit (self, out, &line, "    ", "hostPrefix", s->b, TRUE);
      emit (self, out, &line, "    ", "remoteTCPPort", s->c, FALSE);
    }
  return g_string_free (out, FALSE);
}

char *
gt_app_editor_get_document (GtAppEditor *self)
{
  g_return_val_if_fail (GT_IS_APP_EDITOR (self), NULL);

  if (g_strcmp0 (gtk_stack_get_visible_child_name (self->mode_stack), "yaml") == 0)
    {
      GtkTextBuffer *buffer = gtk_text_view_get_buffer (self->yaml_view);
      GtkTextIter start, end;

      gtk_text_buffer_get_bounds (buffer, &start, &end);
      return gtk_text_buffer_get_text (buffer, &start, &end, FALSE);
    }
  return render_form (self);
}

static void
mark (GtAppEditor *self, GtkWidget *widget, const char *message)
{
  GtkWidget *group = gtk_widget_get_ancestor (widget, ADW_TYPE_PREFERENCES_GROUP);
  GtkWidget *expander = gtk_widget_get_ancestor (widget, ADW_TYPE_EXPANDER_ROW);

  gtk_widget_add_css_class (widget, "error");
  gtk_widget_set_tooltip_text (widget, message);
  g_ptr_array_add (self->marked, g_object_ref (widget));
  if (expander != NULL)
    adw_expander_row_set_expanded (ADW_EXPANDER_ROW (expander), TRUE);
  if (group != NULL)
    {
      if (!g_hash_table_contains (self->group_descriptions, group))
        g_hash_table_insert (self->group_descriptions, g_object_ref (group),
                             g_strdup (adw_preferences_group_get_description (
                               ADW_PREFERENCES_GROUP (group))));
      adw_preferences_group_set_description (ADW_PREFERENCES_GROUP (group), message);
    }
  gtk_widget_grab_focus (widget);
}

void
gt_app_editor_clear_errors (GtAppEditor *self)
{
  GHashTableIter iter;
  gpointer key, value;

  g_return_if_fail (GT_IS_APP_EDITOR (self));

  for (guint i = 0; i < self->marked->len; i++)
    {
      gtk_widget_remove_css_class (self->marked->pdata[i], "error");
      gtk_widget_set_tooltip_text (self->marked->pdata[i], NULL);
    }
  g_ptr_array_set_size (self->marked, 0);
  g_hash_table_iter_init (&iter, self->group_descriptions);
  while (g_hash_table_iter_next (&iter, &key, &value))
    adw_preferences_group_set_description (key, value);
  g_hash_table_remove_all (self->group_descriptions);
  gtk_widget_set_visible (GTK_WIDGET (self->yaml_error), FALSE);
}

void
gt_app_editor_show_error (GtAppEditor *self, const GError *error)
{
  g_autoptr (GError) copy = NULL;
  guint line = 0, column = 0;
  const char *message = NULL;
  gboolean placed;

  g_return_if_fail (GT_IS_APP_EDITOR (self));
  g_return_if_fail (error != NULL);

  gt_app_editor_clear_errors (self);
  copy = g_error_copy (error);
  g_dbus_error_strip_remote_error (copy);
  placed = gt_dbus_error_get_place (copy, &line, &column, &message);
  if (g_strcmp0 (gtk_stack_get_visible_child_name (self->mode_stack), "form") == 0)
    {
      GtkWidget *widget = NULL;

      /* The field of that line, else of the nearest line above it. */
      for (guint l = line; placed && l > 0 && widget == NULL; l--)
        widget = g_hash_table_lookup (self->line_widgets, GUINT_TO_POINTER (l));
      if (widget != NULL)
        {
          mark (self, widget, message);
          return;
        }
      mark (self, GTK_WIDGET (self->name_row), copy->message);
      return;
    }
  gtk_label_set_text (self->yaml_error, copy->message);
  gtk_widget_set_visible (GTK_WIDGET (self->yaml_error), TRUE);
  if (placed)
    {
      GtkTextBuffer *buffer = gtk_text_view_get_buffer (self->yaml_view);
      GtkTextIter iter;

      gtk_text_buffer_get_iter_at_line_offset (buffer, &iter, (int) line - 1,
                                               column > 0 ? (int) column - 1 : 0);
      gtk_text_buffer_place_cursor (buffer, &iter);
      gtk_text_view_scroll_to_iter (self->yaml_view, &iter, 0.1, FALSE, 0, 0);
    }
}

gboolean
gt_app_editor_set_field (GtAppEditor *self, const char *field, const char *value)
{
  static const char *const simple[] = { "name", "remote", "id", "secret", "addr", "tlsAddr" };
  AdwEntryRow *rows[] = { self->name_row, self->remote_row, self->id_row, self->secret_row,
                          self->addr_row, self->tls_addr_row };
  g_auto (GStrv) parts = NULL;
  guint64 index;
  GArray *items;
  Item *item;

  g_return_val_if_fail (GT_IS_APP_EDITOR (self), FALSE);

  for (guint i = 0; i < G_N_ELEMENTS (simple); i++)
    if (strcmp (field, simple[i]) == 0)
      {
        set_text (rows[i], value);
        return TRUE;
      }
  parts = g_strsplit (field, ".", 3);
  if (g_strv_length (parts) != 3 || !g_ascii_string_to_unsigned (parts[1], 10, 0, 99, &index, NULL))
    return FALSE;
  items = strcmp (parts[0], "service") == 0 ? self->services
          : strcmp (parts[0], "user") == 0  ? self->users
                                            : NULL;
  if (items == NULL || index > items->len)
    return FALSE;
  if (index == items->len)
    item = items == self->services ? add_service (self) : add_user (self);
  else
    item = &g_array_index (items, Item, index);
  if (strcmp (parts[2], "local") == 0 || strcmp (parts[2], "id") == 0)
    set_text (item->a, value);
  else if (strcmp (parts[2], "hostPrefix") == 0 || strcmp (parts[2], "secret") == 0)
    set_text (item->b, value);
  else if (strcmp (parts[2], "remoteTCPPort") == 0 && item->c != NULL)
    set_text (item->c, value);
  else
    return FALSE;
  return TRUE;
}

static void
gt_app_editor_dispose (GObject *object)
{
  GtAppEditor *self = GT_APP_EDITOR (object);

  g_clear_pointer (&self->marked, g_ptr_array_unref);
  g_clear_pointer (&self->group_descriptions, g_hash_table_unref);
  g_clear_pointer (&self->line_widgets, g_hash_table_unref);
  gtk_widget_dispose_template (GTK_WIDGET (self), GT_TYPE_APP_EDITOR);
  G_OBJECT_CLASS (gt_app_editor_parent_class)->dispose (object);
}

static void
gt_app_editor_finalize (GObject *object)
{
  GtAppEditor *self = GT_APP_EDITOR (object);

  g_array_unref (self->services);
  g_array_unref (self->users);
  G_OBJECT_CLASS (gt_app_editor_parent_class)->finalize (object);
}

static void
gt_app_editor_class_init (GtAppEditorClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = gt_app_editor_dispose;
  object_class->finalize = gt_app_editor_finalize;
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/gtrelay/Gt/gt-app-editor.ui");
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, mode_stack);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, file_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, name_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, client_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, remote_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, id_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, secret_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, services_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, server_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, addr_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, tls_addr_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, users_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, yaml_error);
  gtk_widget_class_bind_template_child (widget_class, GtAppEditor, yaml_view);
  gtk_widget_class_bind_template_callback (widget_class, add_service_cb);
  gtk_widget_class_bind_template_callback (widget_class, add_user_cb);
}

static void
gt_app_editor_init (GtAppEditor *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
  self->kind = GT_CONFIG_KIND_CLIENT;
  self->services = g_array_new (FALSE, TRUE, sizeof (Item));
  self->users = g_array_new (FALSE, TRUE, sizeof (Item));
  self->line_widgets = g_hash_table_new (NULL, NULL);
  self->marked = g_ptr_array_new_with_free_func (g_object_unref);
  self->group_descriptions = g_hash_table_new_full (NULL, NULL, g_object_unref, g_free);
}
