# RMSNorm of a [128, 1024] bf16 tile: Y[p, :] = X[p, :] / sqrt(mean(X[p, :]^2) + eps) * W, eps = 1e-5.
#
# One row per partition. The weight vector W[1024] is broadcast to all 128 partitions by a zero-stride
# HBM read (128@0: every partition reads the same row). Scalar: square(x / 32) summed over the row gives
# mean(x^2) (1024 = 32^2) in reduce_dst; rsqrt(mean + eps) with eps as the bias immediate. Vector:
# x * rstd (per-partition operand), then * w, writing bf16.
#
# SBUF bytes per partition: x bf16 @0 (2 KiB), w bf16 @2048 (2 KiB), mean @4096, rstd @4100 (fp32),
# squares fp32 @8192 (4 KiB, unused), x*rstd fp32 @12288 (4 KiB), y bf16 @16384 (2 KiB).

.tensor X bf16[128,1024] input
.tensor W bf16[1024] weight
.tensor Y bf16[128,1024] output
.sem ldx, ldw, rstd, done

.stream c0.dma0
dma_copy dst=sbuf[0:128 +0 (1,1024) bf16] src=hbm.X[128@1024 +0 (1,1024) bf16] signal=ldx+1
dma_copy dst=hbm.Y[128@1024 +0 (1,1024) bf16] src=sbuf[0:128 +16384 (1,1024) bf16] wait=done>=1

.stream c0.dma1
dma_copy dst=sbuf[0:128 +2048 (1,1024) bf16] src=hbm.W[128@0 +0 (1,1024) bf16] signal=ldw+1

.stream c0.scalar
activate dst=sbuf[0:128 +8192 (1,1024) fp32] src=sbuf[0:128 +0 (1,1024) bf16] reduce_dst=sbuf[0:128 +4096 (1,1) fp32] func=square scale_imm=0.03125 wait=ldx>=1
activate dst=sbuf[0:128 +4100 (1,1) fp32] src=sbuf[0:128 +4096 (1,1) fp32] func=rsqrt bias_imm=1e-05 signal=rstd+1

.stream c0.vector
tensor_scalar dst=sbuf[0:128 +12288 (1,1024) fp32] src=sbuf[0:128 +0 (1,1024) bf16] scalar0=sbuf[0:128 +4100 (1,1) fp32] op0=mul wait=rstd>=1
tensor_tensor dst=sbuf[0:128 +16384 (1,1024) bf16] in0=sbuf[0:128 +12288 (1,1024) fp32] in1=sbuf[0:128 +2048 (1,1024) bf16] op=mul wait=ldw>=1 signal=done+1
