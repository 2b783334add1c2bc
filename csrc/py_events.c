/*
 * py_events.c — the engine's recovery events, logged on logging.getLogger("kimberlite").
 *
 * The engine reports recovery actions (quarantined torn tails, rebuilt indexes, damage
 * found) through a callback that runs without the GIL, with the engine mutex held. The
 * callback only queues the message under a small mutex of the Storage object; after each
 * engine call the calling thread, holding the GIL again, drains the queue into
 * logging.getLogger("kimberlite").warning().
 */
#include "py_kimberlite.h"

#include <stdlib.h>
#include <string.h>

struct kmb_event_node {
    struct kmb_event_node *next;
    char message[];
};

typedef kmb_storage_object StorageObject;

/* Engine callback: runs without the GIL and with the engine mutex held. Only queues. */
void kmb_events_push(void *ctx, const char *message)
{
    StorageObject *self = (StorageObject *)ctx;
    size_t n = strlen(message);
    kmb_event_node *node = malloc(sizeof *node + n + 1);
    if (node == NULL) return; /* dropping a log line beats failing the engine call */
    node->next = NULL;
    memcpy(node->message, message, n + 1);
    pthread_mutex_lock(&self->events_mu);
    if (self->events_tail != NULL)
        self->events_tail->next = node;
    else
        self->events_head = node;
    self->events_tail = node;
    pthread_mutex_unlock(&self->events_mu);
}

static kmb_event_node *storage_take_events(StorageObject *self)
{
    pthread_mutex_lock(&self->events_mu);
    kmb_event_node *head = self->events_head;
    self->events_head = self->events_tail = NULL;
    pthread_mutex_unlock(&self->events_mu);
    return head;
}

static void free_events(kmb_event_node *node)
{
    while (node != NULL) {
        kmb_event_node *next = node->next;
        free(node);
        node = next;
    }
}

/*
 * Log the queued recovery messages (GIL held). Any exception already set (the caller's
 * error) is kept; a failure of logging itself is reported as unraisable.
 */
void kmb_events_drain(StorageObject *self)
{
    kmb_event_node *head = storage_take_events(self);
    if (head == NULL) return;

#if PY_VERSION_HEX >= 0x030C0000
    PyObject *pending = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* deprecated in 3.12, the only way before */
#endif
    PyObject *logger = NULL;
    PyObject *logging = PyImport_ImportModule("logging");
    if (logging != NULL) {
        logger = PyObject_CallMethod(logging, "getLogger", "s", "kimberlite");
        Py_DECREF(logging);
    }
    for (kmb_event_node *n = head; n != NULL && logger != NULL; n = n->next) {
        PyObject *msg = PyUnicode_DecodeFSDefault(n->message);
        PyObject *r = msg ? PyObject_CallMethod(logger, "warning", "O", msg) : NULL;
        Py_XDECREF(msg);
        if (r == NULL) break;
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(logger);
    free_events(head);
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(pending);
#else
    PyErr_Restore(type, value, tb);
#endif
}

void kmb_events_discard(StorageObject *self)
{
    free_events(storage_take_events(self));
}
