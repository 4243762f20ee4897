"""GPTQ (Frantar et al., 2022) into q4 groups."""
from __future__ import annotations

import numpy as np

from fastlm.formats.qrecords import check_format, padded_k, records_q4
from fastlm.quant.search import fit_dm, quantize_q4_search


def gptq_q4(w: np.ndarray, H: np.ndarray, G: int = 32, block: int = 128, damp: float = 0.01,
            fit_steps: int = 4, act_order: bool = False) -> np.ndarray:
    """GPTQ (Frantar et al., 2022) into q4 groups: columns are rounded one at a time and each one's
    error is pushed onto the columns not yet rounded, through the inverse of H = X^T X (the inputs'
    second moments from calibration), so it lands where the inputs are small. A group's scale and
    minimum are fitted (as fit_dm, weighted by diag H) when its first column comes up; with
    act_order, columns go in order of decreasing diag H and every group's (d, m) is fitted up
    front from the original weights ("static groups")."""
    check_format("q4", G)
    N, K = w.shape
    if K % G or block % G:
        return quantize_q4_search(w, G)
    W = w.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    dead = np.diag(H) <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(K)] += damp * np.mean(np.diag(H))
    diag_h = np.diag(H).copy()
    D = np.zeros((N, K // G))
    M = np.zeros((N, K // G))
    perm = np.arange(K)
    if act_order:
        g = W.reshape(N, K // G, G)
        D, M = fit_dm(g, np.broadcast_to(diag_h.reshape(1, K // G, G), g.shape), fit_steps)
        perm = np.argsort(-diag_h, kind="stable")
        W, H = W[:, perm], H[perm][:, perm]
    Hinv = np.linalg.inv(H)
    U = np.linalg.cholesky((Hinv + Hinv.T) / 2).T  # upper: Hinv = U^T U
    Q = np.zeros((N, K))
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            orig = perm[col]
            if not act_order and col % G == 0:
                wg = W1[:, i:i + G][:, None, :]
                d, m = fit_dm(wg, np.broadcast_to(diag_h[col:col + G], wg.shape), fit_steps)
                D[:, col // G], M[:, col // G] = d[:, 0], m[:, 0]
            dg, mg = D[:, orig // G], M[:, orig // G]
            q = np.where(dg > 0, np.clip(np.rint((W1[:, i] - mg) / np.where(dg > 0, dg, 1)), 0, 15), 0)
            Q[:, orig] = q
            err = (W1[:, i] - (dg * q + mg)) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    kp = padded_k("q4", K, G)
    if kp != K:  # zero padding to a multiple of 64: any quant, the activations there are 0
        Q = np.concatenate([Q, np.zeros((N, kp - K))], axis=1)
        D = np.concatenate([D, np.zeros((N, (kp - K) // G))], axis=1)
        M = np.concatenate([M, np.zeros((N, (kp - K) // G))], axis=1)
    return records_q4(Q, D.astype(np.float16), M.astype(np.float16))
