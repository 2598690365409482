/* CKernels — umbrella header. */
#ifndef CKERNELS_H
#define CKERNELS_H
#include "ck_common.h"
#include "ck_topk.h"
#include "ck_hamming.h"
#include "ck_blas.h"
#include "ck_qmatmul.h"
#include "ck_attention.h"
#include "ck_pq.h"
#include "ck_ops.h"
#include "ck_membw.h"
#include "ck_vec.h"
#include "ck_uring.h"
#include "ck_atomic.h"
#endif
