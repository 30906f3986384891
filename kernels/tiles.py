"""On-chip building blocks shared by the kernels (plain functions of NKI tiles).

Layout conventions: token-major tiles are (tokens <= 128 partitions, features); matmul
chains run feature-major, (features in chunks of <= 128 partitions, tokens), because
`nc_matmul` contracts over the partition axis and returns stationary.T @ moving.
"""

from __future__ import annotations

from worldsim.kernels.nki_compat import nisa, nl

P = 128  # partitions
MOVING_MAX = 512  # nc_matmul moving free size (one PSUM bank of float32)
NEG = -1.0e30  # additive mask value: exp(NEG - m) == 0 in float32


def chunks(n: int, size: int = P) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def load(src, dtype=None):
    """HBM view -> new SBUF tile (cast to dtype on the way)."""
    t = nl.ndarray(src.shape, dtype=dtype or src.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=t, src=src)
    return t


def load_rows(w, dtype):
    """A (K, F) HBM matrix as SBUF tiles of <= 128 rows (the contraction chunks)."""
    return [load(w[a:b, :], dtype) for a, b in chunks(w.shape[0])]


def transpose(src, dtype):
    """SBUF (p, f <= 128) -> SBUF (f, p) through the Tensor Engine and PSUM."""
    p, f = src.shape
    ps = nl.ndarray((f, p), dtype=src.dtype, buffer=nl.psum)
    nisa.nc_transpose(dst=ps, data=src)
    out = nl.ndarray((f, p), dtype=dtype, buffer=nl.sbuf)
    nisa.tensor_copy(dst=out, src=ps)
    return out


def transpose_cols(x, dtype):
    """Token-major (n <= 128, K) -> feature-major chunks [(<=128, n)] along K."""
    return [transpose(x[:, a:b], dtype) for a, b in chunks(x.shape[1])]


def linear_t(x_t, w_rows, bias_col, cols, act, dtype):
    """Feature-major y.T = act(w[:, cols].T @ x.T + b[cols]) for one output slice.

    x_t: contraction chunks [(kc, n)]; w_rows: matching row tiles [(kc, F)]; cols (a, b)
    with b - a <= 128; bias_col: HBM (F, 1). Returns SBUF (b - a, n) in dtype.
    """
    a, b = cols
    n = x_t[0].shape[1]
    acc = nl.ndarray((b - a, n), dtype=nl.float32, buffer=nl.psum)
    for i, (xc, wc) in enumerate(zip(x_t, w_rows, strict=True)):
        nisa.nc_matmul(dst=acc, stationary=wc[:, a:b], moving=xc, accumulate=i > 0)
    bias = load(bias_col[a:b, :], nl.float32)
    out = nl.ndarray((b - a, n), dtype=dtype, buffer=nl.sbuf)
    nisa.activation(dst=out, op=act, data=acc, bias=bias)
    return out


def mlp_t(x_t, w1_rows, b1, w2_rows, b2, d_out, dtype):
    """Fused GELU(tanh) MLP, feature-major in and out: [(<=128, n)] -> [(<=128, n)] fp32."""
    hidden = w1_rows[0].shape[1]
    h_t = [linear_t(x_t, w1_rows, b1, c, nl.gelu_apprx_tanh, dtype) for c in chunks(hidden)]
    return [linear_t(h_t, w2_rows, b2, c, nl.copy, nl.float32) for c in chunks(d_out)]


def untranspose(y_t, n):
    """Feature-major fp32 chunks [(<=128, n)] -> token-major SBUF (n, sum) fp32."""
    d = sum(c.shape[0] for c in y_t)
    out = nl.ndarray((n, d), dtype=nl.float32, buffer=nl.sbuf)
    a = 0
    for c in y_t:
        ps = nl.ndarray((n, c.shape[0]), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_transpose(dst=ps, data=c)
        nisa.tensor_copy(dst=out[:, a : a + c.shape[0]], src=ps)
        a += c.shape[0]
    return out


def modulated_norm_tile(x, shift, scale, eps: float, dtype):
    """LayerNorm over the free axis (no affine), then * (1 + scale) + shift.

    x, shift, scale: SBUF (n, d) fp32 (shift/scale may be views of a wider tile).
    """
    n, d = x.shape
    f32 = nl.float32
    mean = nl.ndarray((n, 1), dtype=f32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=mean, op=nl.add, data=x, axis=1, keepdims=True)
    nisa.tensor_scalar(dst=mean, data=mean, op0=nl.multiply, operand0=1.0 / d)
    xc = nl.ndarray((n, d), dtype=f32, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=xc, data=x, op0=nl.subtract, operand0=mean)
    sq = nl.ndarray((n, d), dtype=f32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=sq, data1=xc, data2=xc, op=nl.multiply)
    var = nl.ndarray((n, 1), dtype=f32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=var, op=nl.add, data=sq, axis=1, keepdims=True)
    nisa.tensor_scalar(
        dst=var, data=var, op0=nl.multiply, operand0=1.0 / d, op1=nl.add, operand1=eps
    )
    rstd = nl.ndarray((n, 1), dtype=f32, buffer=nl.sbuf)
    nisa.activation(dst=rstd, op=nl.rsqrt, data=var)
    nisa.tensor_scalar(dst=xc, data=xc, op0=nl.multiply, operand0=rstd)
    gain = nl.ndarray((n, d), dtype=f32, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=gain, data=scale, op0=nl.add, operand0=1.0)
    nisa.tensor_tensor(dst=xc, data1=xc, data2=gain, op=nl.multiply)
    out = nl.ndarray((n, d), dtype=dtype, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=out, data1=xc, data2=shift, op=nl.add)
    return out


class OnlineSoftmax:
    """softmax(q k.T * scale + bias) @ v accumulated one key tile at a time (fp32 state)."""

    def __init__(self, q_t, scale: float, dtype) -> None:
        self.q_t, self.scale, self.dtype = q_t, scale, dtype  # q_t: SBUF (dh, m)
        dh, m = q_t.shape
        f32 = nl.float32
        self.m_max = nl.ndarray((m, 1), dtype=f32, buffer=nl.sbuf)
        nisa.memset(dst=self.m_max, value=NEG)
        self.l_sum = nl.ndarray((m, 1), dtype=f32, buffer=nl.sbuf)
        nisa.memset(dst=self.l_sum, value=0.0)
        self.o = nl.ndarray((m, dh), dtype=f32, buffer=nl.sbuf)
        nisa.memset(dst=self.o, value=0.0)

    def add(self, k_t, v, bias) -> None:
        """k_t: SBUF (dh, kt <= 128); v: SBUF (kt, dh); bias: SBUF (m, kt) fp32 additive."""
        f32 = nl.float32
        dh, m = self.q_t.shape
        kt = k_t.shape[1]
        s_ps = nl.ndarray((m, kt), dtype=f32, buffer=nl.psum)
        nisa.nc_matmul(dst=s_ps, stationary=self.q_t, moving=k_t, accumulate=False)
        s = nl.ndarray((m, kt), dtype=f32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=s, data=s_ps, op0=nl.multiply, operand0=self.scale)
        nisa.tensor_tensor(dst=s, data1=s, data2=bias, op=nl.add)
        m_new = nl.ndarray((m, 1), dtype=f32, buffer=nl.sbuf)
        nisa.tensor_reduce(dst=m_new, op=nl.maximum, data=s, axis=1, keepdims=True)
        nisa.tensor_tensor(dst=m_new, data1=m_new, data2=self.m_max, op=nl.maximum)
        neg = nl.ndarray((m, 1), dtype=f32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=neg, data=m_new, op0=nl.multiply, operand0=-1.0)
        p = nl.ndarray((m, kt), dtype=f32, buffer=nl.sbuf)
        row = nl.ndarray((m, 1), dtype=f32, buffer=nl.sbuf)
        nisa.activation(dst=p, op=nl.exp, data=s, bias=neg, reduce_op=nl.add, reduce_res=row)
        alpha = nl.ndarray((m, 1), dtype=f32, buffer=nl.sbuf)
        nisa.activation(dst=alpha, op=nl.exp, data=self.m_max, bias=neg)
        nisa.tensor_scalar(
            dst=self.l_sum,
            data=self.l_sum,
            op0=nl.multiply,
            operand0=alpha,
            op1=nl.add,
            operand1=row,
        )
        p_lo = nl.ndarray((m, kt), dtype=self.dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=p_lo, src=p)
        p_t = transpose(p_lo, self.dtype)  # (kt, m)
        pv = nl.ndarray((m, dh), dtype=f32, buffer=nl.psum)
        nisa.nc_matmul(dst=pv, stationary=p_t, moving=v, accumulate=False)
        nisa.tensor_scalar(dst=self.o, data=self.o, op0=nl.multiply, operand0=alpha)
        nisa.tensor_tensor(dst=self.o, data1=self.o, data2=pv, op=nl.add)
        nisa.tensor_copy(dst=self.m_max, src=m_new)

    def result(self):
        """SBUF (m, dh) fp32: o / l."""
        out = nl.ndarray(self.o.shape, dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=out, data=self.o, op0=nl.divide, operand0=self.l_sum)
        return out
