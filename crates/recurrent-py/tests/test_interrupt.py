"""Ctrl-C: SIGINT to a child process that is fitting stops it between two
steps with KeyboardInterrupt, the model left at the last completed step."""

import os
import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import recurrent
    x = np.random.default_rng(0).normal(size=(256, 20, 4)).astype(np.float32)
    y = x[:, :, :1].mean(axis=1)
    m = recurrent.Model(cell="lstm", input_size=4, hidden_size=32, seed=0)
    before = m.state_dict()
    print("ready", flush=True)
    t0 = time.time()
    try:
        m.fit(x, y, epochs=1000000, batch_size=8, verbose=False, threads=1)
    except KeyboardInterrupt:
        after = m.state_dict()
        changed = any(not np.array_equal(before[k], after[k]) for k in before)
        finite = all(np.all(np.isfinite(v)) for v in after.values())
        # The model still works after the interruption.
        ok = np.all(np.isfinite(m.predict(x[:4])))
        print(f"interrupted changed={changed} finite={finite} ok={ok} after={time.time() - t0:.2f}s", flush=True)
        sys.exit(0)
    print("fit ended without interruption", flush=True)
    sys.exit(1)
""")


def test_sigint_stops_fit_with_keyboard_interrupt():
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.5)  # well inside the fit (a million epochs take hours)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, (out, err)
    assert "interrupted changed=True finite=True ok=True" in out, (out, err)
