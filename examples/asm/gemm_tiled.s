# Tiled GEMM: C[256,512] = AT[256,256]^T . B[256,512]   (bf16 in, fp32 accumulation in PSUM, bf16 out)
#
# AT holds A transposed (K-major: row k = A[:, k]) so that K lies on the partition axis of both matmul
# inputs. K = 256 is split into two K tiles of 128 accumulated in one PSUM bank (accumulate=false, then
# true); M = 256 into two M tiles of 128 (PSUM banks 0 and 1); N = 512 fits one matmul (one 2 KiB bank).
# The loop over the four AT tiles i = (m, k) = (0,0) (0,1) (1,0) (1,1) is unrolled. AT tiles are
# double-buffered: tile i goes to buffer i%2 on DMA queue i%2, so the load of tile i+1 overlaps the
# matmul of tile i; a buffer is refilled only after the matmul that read it (wait mm>=i-1). B's two K tiles
# are loaded once on queue 2. The vector engine evicts each finished PSUM bank to SBUF (fp32 -> bf16) and
# queue 3 stores it.
#
# SBUF bytes per partition: B k-tile 0 @0, B k-tile 1 @1024, AT buffers @2048 and @2304, C tiles @4096
# and @5120. PSUM: bank m at byte 2048*m.
#
# Semaphores: ld0/ld1 = AT tiles landed in buffer 0/1, bld = B tiles landed, mm = matmuls done,
# ev = PSUM banks evicted.

.tensor AT bf16[256,256] input
.tensor B bf16[256,512] weight
.tensor C bf16[256,512] output
.sem ld0, ld1, bld, mm, ev

.stream c0.dma2
dma_copy dst=sbuf[0:128 +0 (1,512) bf16] src=hbm.B[128@512 +0 (1,512) bf16] signal=bld+1
dma_copy dst=sbuf[0:128 +1024 (1,512) bf16] src=hbm.B[128@512 +131072 (1,512) bf16] signal=bld+1

# AT tile (m, k) starts at element (128k, 128m) of AT: byte 2*(128k*256 + 128m)
.stream c0.dma0
dma_copy dst=sbuf[0:128 +2048 (1,128) bf16] src=hbm.AT[128@256 +0 (1,128) bf16] signal=ld0+1
dma_copy dst=sbuf[0:128 +2048 (1,128) bf16] src=hbm.AT[128@256 +256 (1,128) bf16] wait=mm>=1 signal=ld0+1

.stream c0.dma1
dma_copy dst=sbuf[0:128 +2304 (1,128) bf16] src=hbm.AT[128@256 +65536 (1,128) bf16] signal=ld1+1
dma_copy dst=sbuf[0:128 +2304 (1,128) bf16] src=hbm.AT[128@256 +65792 (1,128) bf16] wait=mm>=2 signal=ld1+1

.stream c0.tensor
# m = 0: k = 0 then k = 1 into PSUM bank 0
matmul dst=psum[0:128 +0 (1,512) fp32] stationary=sbuf[0:128 +2048 (1,128) bf16] moving=sbuf[0:128 +0 (1,512) bf16] accumulate=false wait=ld0>=1,bld>=2 signal=mm+1
matmul dst=psum[0:128 +0 (1,512) fp32] stationary=sbuf[0:128 +2304 (1,128) bf16] moving=sbuf[0:128 +1024 (1,512) bf16] accumulate=true wait=ld1>=1 signal=mm+1
# m = 1: k = 0 then k = 1 into PSUM bank 1
matmul dst=psum[0:128 +2048 (1,512) fp32] stationary=sbuf[0:128 +2048 (1,128) bf16] moving=sbuf[0:128 +0 (1,512) bf16] accumulate=false wait=ld0>=2 signal=mm+1
matmul dst=psum[0:128 +2048 (1,512) fp32] stationary=sbuf[0:128 +2304 (1,128) bf16] moving=sbuf[0:128 +1024 (1,512) bf16] accumulate=true wait=ld1>=2 signal=mm+1

.stream c0.vector
tensor_copy dst=sbuf[0:128 +4096 (1,512) bf16] src=psum[0:128 +0 (1,512) fp32] wait=mm>=2 signal=ev+1
tensor_copy dst=sbuf[0:128 +5120 (1,512) bf16] src=psum[0:128 +2048 (1,512) fp32] wait=mm>=4 signal=ev+1

.stream c0.dma3
dma_copy dst=hbm.C[128@512 +0 (1,512) bf16] src=sbuf[0:128 +4096 (1,512) bf16] wait=ev>=1
dma_copy dst=hbm.C[128@512 +131072 (1,512) bf16] src=sbuf[0:128 +5120 (1,512) bf16] wait=ev>=2
