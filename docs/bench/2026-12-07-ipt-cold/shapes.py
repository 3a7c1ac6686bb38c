# The script shapes measured, from gen.py's output: python3 gen.py 10000 > s10k.txt; python3 shapes.py s10k.txt
import sys
lines = open(sys.argv[1]).read().split('\n')
hdr = lines[0]
chains = [l for l in lines if l.startswith(':')]
rules = [l for l in lines[1:] if l.startswith('-A')]
desc = sorted(chains, reverse=True)
jumps = ['-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
         '-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
         '-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']
head = [':KUBE-SERVICES - [0:0]', ':KUBE-POSTROUTING - [0:0]']
def w(name, body): open(name, 'w').write('\n'.join([hdr] + body + ['COMMIT']) + '\n')
w('desc.txt', desc + rules)                                   # main's planner: declarations descending
w('asc.txt', sorted(chains) + rules)
w('desc-chains.txt', desc)                                    # declarations only
w('asc-chains.txt', sorted(chains))
w('descS.txt', ['-S'] + desc + rules)                         # -S first (no built-in jumps)
w('descJ.txt', desc + jumps + rules)                          # main's shape with the built-in jumps
w('descJS.txt', desc + jumps + ['-S'] + rules)                # -S after every declaration
w('headJS.txt', head + jumps + ['-S'] + [c for c in desc if c not in head] + rules)  # this branch
