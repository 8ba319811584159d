# Row softmax of a [128, 512] bf16 tile: Y[p, :] = exp(X[p, :] - max_p) / sum(exp(X[p, :] - max_p)).
#
# One row per partition. Vector: row max, negated. Scalar: exp(x - max) with the negated max as the
# per-partition bias, summing each row into reduce_dst in the same instruction, then 1/sum. Vector:
# multiply by the per-partition reciprocal, writing bf16.
#
# SBUF bytes per partition: x bf16 @0 (1 KiB), max @1024, -max @1028, sum @1032, 1/sum @1036 (fp32),
# e = exp(x - max) fp32 @2048 (2 KiB), y bf16 @4096 (1 KiB).

.tensor X bf16[128,512] input
.tensor Y bf16[128,512] output
.sem ld, nmax, rsum, done

.stream c0.dma0
dma_copy dst=sbuf[0:128 +0 (1,512) bf16] src=hbm.X[128@512 +0 (1,512) bf16] signal=ld+1
dma_copy dst=hbm.Y[128@512 +0 (1,512) bf16] src=sbuf[0:128 +4096 (1,512) bf16] wait=done>=1

.stream c0.vector
tensor_reduce dst=sbuf[0:128 +1024 (1,1) fp32] src=sbuf[0:128 +0 (1,512) bf16] op=max axes=1 wait=ld>=1
tensor_scalar dst=sbuf[0:128 +1028 (1,1) fp32] src=sbuf[0:128 +1024 (1,1) fp32] op0=mul imm0=-1.0 signal=nmax+1
tensor_scalar dst=sbuf[0:128 +4096 (1,512) bf16] src=sbuf[0:128 +2048 (1,512) fp32] scalar0=sbuf[0:128 +1036 (1,1) fp32] op0=mul wait=rsum>=1 signal=done+1

.stream c0.scalar
activate dst=sbuf[0:128 +2048 (1,512) fp32] src=sbuf[0:128 +0 (1,512) bf16] bias=sbuf[0:128 +1028 (1,1) fp32] reduce_dst=sbuf[0:128 +1032 (1,1) fp32] func=exp wait=nmax>=1
activate dst=sbuf[0:128 +1036 (1,1) fp32] src=sbuf[0:128 +1032 (1,1) fp32] func=reciprocal signal=rsum+1
