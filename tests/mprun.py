# mprun — runs firmware test modules under the MicroPython unix port, which has no pytest.
#
# micropython tests/mprun.py DIR_OR_FILE...   (MICROPYPATH must hold tools/simboard, the repo root,
# lib/ and tests/; tools/check.py sets it, through tools/mp.py). Every `test_*` function of every
# `test_*.py` module runs in name order; the last line is the count, pytest-style.

import gc
import os
import sys

import support


def _modules(arg):
    if arg.endswith(".py"):
        return [arg]
    return [arg + "/" + f for f in sorted(os.listdir(arg)) if f.startswith("test_") and f.endswith(".py")]


def _reset_world():
    w = sys.modules.get("simworld")
    if w is not None:
        w.world.reset()


def main(argv):
    passed = failed = skipped = 0
    quiet = "-q" in argv
    only = None
    if "-k" in argv:
        only = argv[argv.index("-k") + 1]
    for arg in [a for a in argv if not a.startswith("-") and a != only]:
        for path in _modules(arg):
            folder, _, fname = path.rpartition("/")
            if folder not in sys.path:
                sys.path.append(folder)
            modname = fname[:-3]
            try:
                mod = __import__(modname)
            except Exception as e:
                failed += 1
                print("ERROR importing %s:" % path)
                sys.print_exception(e)
                continue
            names = sorted(n for n in dir(mod) if n.startswith("test_"))
            for name in names:
                if only is not None and only not in name:
                    continue
                fn = getattr(mod, name)
                if not callable(fn):
                    continue
                _reset_world()
                try:
                    fn()
                    passed += 1
                    if not quiet:
                        print("PASS %s::%s" % (fname, name))
                except support.SkipTest as e:
                    skipped += 1
                    print("SKIP %s::%s (%s)" % (fname, name, e))
                except Exception as e:
                    failed += 1
                    print("FAIL %s::%s" % (fname, name))
                    sys.print_exception(e)
            del sys.modules[modname]
            gc.collect()
    if not failed:
        support.remove_tmpdirs()
    print("micropython: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed or not passed else 0


sys.exit(main(sys.argv[1:]))
