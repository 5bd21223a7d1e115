/*
 * The other side of the rings benchmark: the same streams and round trip
 * as benches/rings.rs, written with Xen's own io/ring.h macros from the
 * system's Xen headers (Debian's libxen-dev), both ends in C. Built by
 * build.rs with the `cc` crate and linked into the bench only.
 *
 * The barriers are the ones a Linux guest gets on x86-64: xen_mb() a full
 * fence, xen_rmb() and xen_wmb() compiler barriers (x86 keeps loads with
 * loads and stores with stores in order).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define rmb() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#define wmb() __atomic_signal_fence(__ATOMIC_SEQ_CST)
/* Without __XEN_INTERFACE_VERSION__, ring.h maps xen_mb() and co. to the
 * above; with a recent one it leaves them to us. */
#ifndef xen_mb
#define xen_mb() mb()
#define xen_rmb() rmb()
#define xen_wmb() wmb()
#endif

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>

#define PAGE 4096

struct msg16 {
    uint64_t id;
    uint64_t val;
};

DEFINE_RING_TYPES(m16, struct msg16, struct msg16);

static uint64_t m16_make_val(uint64_t id) { return id ^ 0x55; }

/* ---- 16-byte requests and responses ---- */

void *ringh_m16_front(void *page)
{
    struct m16_sring *s = page;
    struct m16_front_ring *f = malloc(sizeof(*f));
    if (!f)
        return NULL;
    SHARED_RING_INIT(s);
    FRONT_RING_INIT(f, s, PAGE);
    return f;
}

unsigned ringh_m16_size(void *front)
{
    return RING_SIZE((struct m16_front_ring *)front);
}

/* Answers every request until *stop is set and nothing is left. */
void ringh_m16_back(void *page, const volatile int *stop, int notify_check)
{
    struct m16_back_ring b;
    BACK_RING_INIT(&b, (struct m16_sring *)page, PAGE);
    for (;;) {
        RING_IDX rp = b.sring->req_prod;
        xen_rmb();
        unsigned n = 0;
        while (b.req_cons != rp) {
            struct msg16 req;
            RING_COPY_REQUEST(&b, b.req_cons, &req);
            b.req_cons++;
            struct msg16 *rsp = RING_GET_RESPONSE(&b, b.rsp_prod_pvt);
            rsp->id = req.id;
            rsp->val = req.val + 1;
            b.rsp_prod_pvt++;
            n++;
        }
        if (n) {
            if (notify_check) {
                int notify;
                RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&b, notify);
                (void)notify;
            } else {
                RING_PUSH_RESPONSES(&b);
            }
        } else if (*stop) {
            break;
        } else {
            __builtin_ia32_pause();
        }
    }
}

/* Streams `iters` messages; returns the sum of the response ids. */
uint64_t ringh_m16_stream(void *front, uint64_t iters, int notify_check)
{
    struct m16_front_ring *f = front;
    uint64_t sent = 0, done = 0, sum = 0;
    while (done < iters) {
        unsigned k = 0;
        while (sent < iters && !RING_FULL(f)) {
            struct msg16 *req = RING_GET_REQUEST(f, f->req_prod_pvt);
            req->id = sent;
            req->val = m16_make_val(sent);
            f->req_prod_pvt++;
            sent++;
            k++;
        }
        if (k) {
            if (notify_check) {
                int notify;
                RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(f, notify);
                (void)notify;
            } else {
                RING_PUSH_REQUESTS(f);
            }
        }
        RING_IDX rp = f->sring->rsp_prod;
        xen_rmb();
        while (f->rsp_cons != rp) {
            sum += RING_GET_RESPONSE(f, f->rsp_cons)->id;
            f->rsp_cons++;
            done++;
        }
    }
    return sum;
}

/* One request in flight at a time. */
uint64_t ringh_m16_roundtrip(void *front, uint64_t iters, int notify_check)
{
    struct m16_front_ring *f = front;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        struct msg16 *req = RING_GET_REQUEST(f, f->req_prod_pvt);
        req->id = i;
        req->val = m16_make_val(i);
        f->req_prod_pvt++;
        if (notify_check) {
            int notify;
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(f, notify);
            (void)notify;
        } else {
            RING_PUSH_REQUESTS(f);
        }
        for (;;) {
            RING_IDX rp = f->sring->rsp_prod;
            xen_rmb();
            if (f->rsp_cons != rp) {
                sum += RING_GET_RESPONSE(f, f->rsp_cons)->id;
                f->rsp_cons++;
                break;
            }
            __builtin_ia32_pause();
        }
    }
    return sum;
}

/* ---- blkif: 112-byte requests, 16-byte responses ---- */

void *ringh_blk_front(void *page)
{
    blkif_sring_t *s = page;
    blkif_front_ring_t *f = malloc(sizeof(*f));
    if (!f)
        return NULL;
    SHARED_RING_INIT(s);
    FRONT_RING_INIT(f, s, PAGE);
    return f;
}

unsigned ringh_blk_size(void *front)
{
    return RING_SIZE((blkif_front_ring_t *)front);
}

void ringh_blk_back(void *page, const volatile int *stop, int notify_check)
{
    blkif_back_ring_t b;
    BACK_RING_INIT(&b, (blkif_sring_t *)page, PAGE);
    for (;;) {
        RING_IDX rp = b.sring->req_prod;
        xen_rmb();
        unsigned n = 0;
        while (b.req_cons != rp) {
            blkif_request_t req;
            RING_COPY_REQUEST(&b, b.req_cons, &req);
            b.req_cons++;
            blkif_response_t *rsp = RING_GET_RESPONSE(&b, b.rsp_prod_pvt);
            rsp->id = req.id;
            rsp->operation = req.operation;
            rsp->status = 0;
            b.rsp_prod_pvt++;
            n++;
        }
        if (n) {
            if (notify_check) {
                int notify;
                RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&b, notify);
                (void)notify;
            } else {
                RING_PUSH_RESPONSES(&b);
            }
        } else if (*stop) {
            break;
        } else {
            __builtin_ia32_pause();
        }
    }
}

uint64_t ringh_blk_stream(void *front, uint64_t iters, int notify_check)
{
    blkif_front_ring_t *f = front;
    uint64_t sent = 0, done = 0, sum = 0;
    while (done < iters) {
        unsigned k = 0;
        while (sent < iters && !RING_FULL(f)) {
            blkif_request_t *req = RING_GET_REQUEST(f, f->req_prod_pvt);
            memset(req, 0, sizeof(*req));
            req->operation = BLKIF_OP_READ;
            req->nr_segments = 1;
            req->id = sent;
            req->sector_number = sent;
            f->req_prod_pvt++;
            sent++;
            k++;
        }
        if (k) {
            if (notify_check) {
                int notify;
                RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(f, notify);
                (void)notify;
            } else {
                RING_PUSH_REQUESTS(f);
            }
        }
        RING_IDX rp = f->sring->rsp_prod;
        xen_rmb();
        while (f->rsp_cons != rp) {
            sum += RING_GET_RESPONSE(f, f->rsp_cons)->id;
            f->rsp_cons++;
            done++;
        }
    }
    return sum;
}
