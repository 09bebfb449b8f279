/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — persistence of the client's state, crash recovery and cleanup.
 *
 * The state of an enrolled client (engine addresses, the certificate, the
 * CA certificates from /crts, the provisioning time, the re-enrollment
 * schedule and retry state, and the lifecycle record of every engine object
 * the client made) is written to and read from an application stream. Only
 * for keys in the mem: engine does the state also hold the private key
 * (PKCS#8): such keys exist nowhere else. Keys in every other engine stay in
 * the engine; the state holds their address only. See docs/persistence.md.
 *
 * Format: versioned binary records with a SHA-256 over the whole content; a
 * corrupt, truncated or unknown-version state is refused with
 * ESTC_ERR_FORMAT and nothing is changed.
 *
 * Threads: as for the client (one thread at a time).
 */
#ifndef ESTC_PERSIST_H
#define ESTC_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <estc/client.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version written; older versions are read where supported. */
#define ESTC_STATE_VERSION 1

/*
 * Where the state goes. A stream stores one whole state at a time:
 * @write replaces the stored state with @len bytes, all or nothing (a
 * failed write must leave the previous state readable); @read returns the
 * whole stored state as malloc()ed bytes in @out, or ESTC_ERR_NOT_FOUND when
 * nothing is stored. Both return ESTC_ERR_IO (or any estc_err) on failure.
 * The state may hold private keys (mem: engine): store it accordingly.
 */
typedef struct estc_state_stream {
    estc_err (*write)(void *arg, const uint8_t *data, size_t len);
    estc_err (*read)(void *arg, estc_buf *out);
    void *arg;
} estc_state_stream;

/**
 * estc_state_stream_file() - a stream on the file at @path.
 *
 * Writes are atomic, by estc_file_write(): a temporary file in the same
 * folder (mode 0600), fsync, rename over @path, fsync of the folder; a
 * failed write is ESTC_ERR_IO. The string @path is not copied: it must
 * outlive the stream. Reading a missing file gives ESTC_ERR_NOT_FOUND.
 * Whoever can write the state decides what a restore removes, so reading
 * refuses with ESTC_ERR_IO, without blocking, what is not a regular file
 * (a FIFO, a device, a symbolic link), a file owned by another user than
 * the effective one or writable by group or others, and a folder not owned
 * by that user or root or writable by group or others; writing refuses the
 * same folders. The reason (the system's text for a failed write) is in
 * the detail of the restore or persist that used the stream.
 * Returns ESTC_OK or ESTC_ERR_INVALID_ARG.
 */
estc_err estc_state_stream_file(estc_state_stream *stream, const char *path);

/**
 * estc_state_stream_mem() - a stream on the buffer @store (owned by the
 * caller, initially empty): a write replaces its bytes, a read copies them.
 * An empty @store reads as ESTC_ERR_NOT_FOUND. Returns ESTC_OK or
 * ESTC_ERR_INVALID_ARG.
 */
estc_err estc_state_stream_mem(estc_state_stream *stream, estc_buf *store);

/**
 * estc_client_is_ready_for_persistence() - false while an operation is in
 * flight (from inside a transport, log, generator or engine callback) or
 * while the lifecycle record holds pending or superseded objects; true
 * otherwise. False for NULL.
 */
bool estc_client_is_ready_for_persistence(const estc_client *client);

/**
 * estc_client_persist() - write the client's state to @stream.
 *
 * Marks the lifecycle record unchanged (see estc_client_cleanup()).
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_STATE (not ready for
 * persistence: the stream is not touched), ESTC_ERR_NOMEM, the engine's
 * errors (reading the certificate, exporting a mem: key) or the stream's
 * write error (ESTC_ERR_IO; the previous stored state stays).
 */
estc_err estc_client_persist(estc_client *client, const estc_state_stream *stream);

/**
 * estc_client_restore() - replace the client's state with the one in
 * @stream, written by estc_client_persist() or by the journal.
 *
 * Configure the client first (server, trust anchors, bootstrap
 * credentials, subject): those are configuration, not state. Recorded
 * objects that are not under the configured key, certificate and CA bases
 * (estc_client_set_enrolled(); without it, the state's own) are dropped
 * from the record with a warning and never removed from their engines. The state's
 * engine addresses (enrolled key and certificate, their bases, the CA
 * prefix) replace the configured ones. mem: keys, the certificate and CA
 * certificates held in mem: are re-created in the context.
 *
 * After a crash: objects the state marks pending (an operation was in
 * flight) are removed from their engines; objects it marks superseded (an
 * operation was committing) are removed as the commit would have. When
 * that purge changed the record, the purged state is written back to
 * @stream.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_STATE (an operation is in
 * flight), ESTC_ERR_NOT_FOUND (nothing stored), ESTC_ERR_FORMAT (corrupt,
 * truncated, another version: the client is unchanged), ESTC_ERR_NOMEM,
 * or the engine's error re-creating a mem: object (the client and the
 * engines are then unchanged). A failed purge is logged; its objects stay
 * recorded and are retried at the next commit or cleanup.
 */
estc_err estc_client_restore(estc_client *client, const estc_state_stream *stream);

/* estc_client_restore_ex() flag: inspect only. */
#define ESTC_RESTORE_READ_ONLY 1u

/**
 * estc_client_restore_ex() - estc_client_restore() with @flags.
 *
 * ESTC_RESTORE_READ_ONLY: no purge and no write-back, for a status tool
 * reading the state of a daemon that may be in the middle of an operation
 * (a purge would remove the daemon's pending objects). mem: objects are
 * still re-created, in this process only. Such a client is for reading
 * (certificate, addresses, estc_client_renewal_info()): do not run
 * operations, persist or clean up with it.
 * Returns what estc_client_restore() returns, and ESTC_ERR_INVALID_ARG for
 * an unknown flag.
 */
estc_err estc_client_restore_ex(estc_client *client, const estc_state_stream *stream,
                                unsigned flags);

/**
 * estc_client_set_journal() - have the client write its state to @stream
 * (NULL: stop) at each step where engine objects change, so that a crash at
 * any point leaves a state from which estc_client_restore() recovers without
 * orphaned objects and without losing valid credentials:
 *  - before each object is created, with that object marked pending;
 *  - just before a commit, as the state will be after it (new objects
 *    committed, replaced ones superseded);
 *  - after each operation, the final state (like estc_client_persist()).
 * A journal write that fails fails the operation (rolled back). The stream
 * structure is copied; its arg must outlive the client or the next call.
 * Usually the same file as for estc_client_persist().
 * Returns ESTC_OK or ESTC_ERR_INVALID_ARG.
 */
estc_err estc_client_set_journal(estc_client *client, const estc_state_stream *stream);

/**
 * estc_client_cleanup() - remove every engine object the client made (keys,
 * certificates, CA certificates), unless nothing changed since the last
 * persist or restore: then the stored state and the engines agree and the
 * objects are kept. Use at shutdown; "unenroll" is estc_client_cleanup()
 * after a change, or estc_lifecycle_cleanup() after estc_lifecycle_changed().
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_STATE (an operation is in
 * flight) or the first removal error (the object stays recorded).
 */
estc_err estc_client_cleanup(estc_client *client);

#ifdef __cplusplus
}
#endif
#endif
