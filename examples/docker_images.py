"""Build the datascience image locally (no registry) and use it; then reap orphans.

Run: python examples/docker_images.py          (the first build downloads numpy/pandas/scikit-learn)
"""

import asyncio
import ssl

from alphora.sandbox import Sandbox, is_docker_available
from alphora.sandbox_docker import BuildOptions, build_images, prune_orphans


async def main() -> None:
    if not is_docker_available():
        print("no Docker engine answers; start dockerd (or run .ci/docker-setup.sh)")
        return
    cafile = ssl.get_default_verify_paths().cafile  # trust this host's CAs inside the image
    options = BuildOptions(ca_certs=[cafile] if cafile else [])
    for report in await asyncio.to_thread(build_images, ["datascience"], options=options):
        print(f"{report.tag}: {'reused' if report.reused else f'built in {report.seconds:.0f}s'}")

    async with Sandbox.create_docker(docker_image="alphora/sandbox:datascience") as sandbox:
        result = await sandbox.run(
            "import numpy as np, pandas as pd\n"
            "from sklearn.linear_model import LinearRegression\n"
            "x = np.arange(10).reshape(-1, 1); y = 3 * x.ravel() + 1\n"
            "m = LinearRegression().fit(x, y)\n"
            "print(pd.Series(y).describe()['mean'], round(m.coef_[0], 3), round(m.intercept_, 3))\n"
        )
        print(result.stdout.strip() or result.stderr)
        await sandbox.destroy()

    pruned = prune_orphans(dry_run=True)
    print(f"orphans a crashed process left: {len(pruned.containers)} container(s), {len(pruned.volumes)} volume(s)")


if __name__ == "__main__":
    asyncio.run(main())
