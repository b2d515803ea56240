"""Write RESULTS.md from scripts/results_template.md: each line ``{{include PATH}}`` is replaced by
that file (the tables `virolbi reproduce` and the benchmarks wrote, copied under results/), so the
numbers in RESULTS.md are always the ones in the committed result files.

    python scripts/write_results.py            # after copying runs/reproduce/tables/* to results/
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(template: str, root: Path) -> str:
    def include(match: re.Match) -> str:
        path = root / match.group(1).strip()
        if not path.is_file():
            return f"*({match.group(1).strip()} not produced yet: see 'What is not done yet')*\n"
        text = path.read_text()
        return re.sub(r"^## .*\n\n?", "", text, count=1)    # the template has its own heading
    return re.sub(r"^\{\{include (.+?)\}\}\s*$", include, template, flags=re.M)


def main() -> int:
    template = (ROOT / "scripts" / "results_template.md").read_text()
    sys.path.insert(0, str(ROOT / "src"))
    from virolbi.io import save_text

    save_text(render(template, ROOT), ROOT / "RESULTS.md")
    print(f"wrote {ROOT / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
