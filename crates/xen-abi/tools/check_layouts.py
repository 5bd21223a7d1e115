#!/usr/bin/env python3
"""Cross-checks xen-abi's layouts and constants against Xen's C headers.

Usage: check_layouts.py [--allow-missing] XEN_PUBLIC_DIR
  XEN_PUBLIC_DIR is a checkout's xen/include/public (or an installed copy
  such as Debian's libxen-dev, /usr/include/xen).
  --allow-missing: headers of an older Xen may lack some structs; their
  checks are reported as skipped instead of failing. Every struct the
  headers do define is still checked.

Layouts: reads every size/offset assertion in ../src, writes a C program
that checks the same facts with sizeof/offsetof on Xen's own structs, and
compiles it with gcc: natively for x86_64 (run, prints mismatches) and
with -m32 (static assertions) for the 32-bit layouts: the Blkif32* and
Compat* types, and the x86_64 assertions of the types `same_in_compat!`
lists again (their layout must not change with the word size). Fields that exist
only on the Rust side (explicit padding) are reported and skipped.

Constants: every integer constant whose name Xen defines as a macro (or as
an enum value of xs_wire.h, xenbus.h, hvm_op.h, or an errno.h entry) is
compared with Xen's value by a static assertion.

Needs gcc with -m32 support. Exit status 0 when everything matches.
"""
import glob, os, re, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, '..', 'src')

# Rust type -> C struct, where the snake_case rule does not give it.
C_NAME = {
    'XenconsInterface': 'xencons_interface',
    'XenstoreDomainInterface': 'xenstore_domain_interface',
    'XsdSockmsg': 'xsd_sockmsg',
    'VcpuHvmX86_32': 'vcpu_hvm_x86_32',
    'VcpuHvmX86_64': 'vcpu_hvm_x86_64',
    'GrantEntryV1': 'grant_entry_v1',
    'SringHeader': 'blkif_sring',
    'E820Entry': 'e820entry',
    'Blkif32Request': 'blkif_request',
    'Blkif32RequestDiscard': 'blkif_request_discard',
    'Blkif32RequestIndirect': 'blkif_request_indirect',
    'Blkif32Response': 'blkif_response',
    'EvtchnFifoControlBlock': 'evtchn_fifo_control_block',
    'XenNetifCtrlRequest': 'xen_netif_ctrl_request',
    'XenNetifCtrlResponse': 'xen_netif_ctrl_response',
    'XenNetifGref': 'xen_netif_gref',
    # C unions or anonymous members: checked by size in Rust only.
    'GrantEntryV2': None, 'GrantEntryV2FullPage': None, 'GrantEntryV2SubPage': None,
    'GrantEntryV2Transitive': None, 'NetifExtraInfoGso': None, 'Pair': None,
}
# Compat* types: Xen's `struct compat_foo` is the public `struct xen_foo` or
# `struct foo` compiled for i386.
XEN_PREFIXED = {'MemoryReservation', 'MemoryExchange', 'MachphysMfnList', 'MachphysMapping',
                'AddToPhysmap', 'AddToPhysmapBatch', 'RemoveFromPhysmap', 'MemoryMap',
                'ForeignMemoryMap', 'PodTarget', 'PlatformParameters'}
FIELD = {('CompatAddToPhysmapBatch', 'foreign_domid'): 'u.foreign_domid',
         ('SringHeader', 'pad'): '__pad',
         ('PhysdevPciDeviceAdd', 'physfn_bus'): 'physfn.bus', ('PhysdevPciDeviceAdd', 'physfn_devfn'): 'physfn.devfn', ('XenAddToPhysmapBatch', 'foreign_domid'): 'u.foreign_domid'}

PRELUDE = r'''
#include <stdint.h>
#include <stddef.h>
#define __XEN_TOOLS__ 1
#define XEN_HAVE_PV_UPCALL_MASK 1
#include "xen.h"
#include "memory.h"
#include "version.h"
#include "vcpu.h"
#include "sched.h"
#include "event_channel.h"
#include "grant_table.h"
#include "domctl.h"
#include "sysctl.h"
#include "physdev.h"
#include "hvm/hvm_op.h"
#include "hvm/params.h"
#include "hvm/hvm_vcpu.h"
#include "arch-x86/hvm/start_info.h"
#include "io/ring.h"
#include "io/console.h"
#include "io/xs_wire.h"
#include "io/blkif.h"
#include "io/netif.h"
/* Xen's e820 entry lives in its private headers: the BIOS layout. */
struct e820entry { uint64_t addr, size; uint32_t type; } __attribute__((packed));
#define SRING_HEADER_SIZE 64
#define SRING_REQ_PROD_OFFSET 0
#define SRING_REQ_EVENT_OFFSET 4
#define SRING_RSP_PROD_OFFSET 8
#define SRING_RSP_EVENT_OFFSET 12
#define SRING_PVT_OFFSET 16
'''
RUNTIME = r'''
#include <stdio.h>
static int bad, n;
int main(void) {
CHECKS
  printf("x86_64: %d checks, %d mismatches\n", n, bad);
  return bad != 0;
}
'''
STATIC = r'''
CHECKS
'''


def assertions():
    src = ''.join(open(f).read() for f in sorted(glob.glob(os.path.join(SRC, '**', '*.rs'), recursive=True)))
    found = re.findall(r'assert_layout!\(\s*(\w+)\s*,\s*([^,]+?)\s*,\s*\{(.*?)\}\s*\)', src, re.S)
    for m in re.finditer(r'(?:evtchn_arg|gnttab_arg|net_struct|compat_struct|physdev_struct)!\(\s*(?:///[^\n]*\n\s*)*(\w+)\s*(?:=\s*\w+)?\s*,'
                         r'\s*(\d+)\s*,\s*\{(.*?)\n\s*\}\s*\);', src, re.S):
        name, size, body = m.groups()
        fields = re.findall(r'^\s*(r#\w+|\w+)\s*:\s*[^=\n]+=\s*(\d+),', body, re.M)
        found.append((name, size, ', '.join(f'{a}: {b}' for a, b in fields)))
    return found


def same_in_compat():
    """Types whose x86_64 layout is asserted to hold for i386 too."""
    src = ''.join(open(f).read() for f in sorted(glob.glob(os.path.join(SRC, '**', '*.rs'), recursive=True)))
    names = set()
    for body in re.findall(r'^same_in_compat!\((.*?)\);', src, re.S | re.M):
        names |= set(re.findall(r'(?:crate::)?(\w+)\s*,', body + ','))
    return names


def c_struct(name):
    if name.startswith('Compat'):
        rest = name[len('Compat'):]
        snake = re.sub(r'(?<!^)(?=[A-Z])', '_', rest).lower()
        return 'xen_' + snake if rest in XEN_PREFIXED else snake
    return C_NAME.get(name, re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower())


def lines_for(found, m32):
    out = []
    same = same_in_compat()
    for name, size, body in found:
        only32 = name.startswith('Blkif32') or name.startswith('Compat')
        if (m32 and not (only32 or name in same)) or (not m32 and only32):
            continue
        c = c_struct(name)
        if c is None:
            continue
        size_of = 'offsetof(struct blkif_sring, ring)' if c == 'blkif_sring' else f'sizeof(struct {c})'
        out.append(render(m32, size_of, size.strip(), f'{name} size'))
        for field, off in re.findall(r'(r#\w+|\w+)\s*:\s*([^,]+)', body):
            field = field.replace('r#', '')
            expr = f'offsetof(struct {c}, {FIELD.get((name, field), field)})'
            out.append(render(m32, expr, off.strip(), f'{name}.{field}'))
    if m32:
        listed = {n for n, _, _ in found}
        if same - listed:
            sys.exit(f'same_in_compat! names types without layout assertions: {sorted(same - listed)}')
    return out


def render(static, c_expr, rust_value, label):
    """One C statement comparing a C layout fact with the Rust one."""
    if static:
        return f'_Static_assert({c_expr} == ({rust_value}), "{label}");'
    return (f'  n++; if ({c_expr} != ({rust_value})) {{ printf("%s: C %zu, Rust %zu\\n", "{label}", '
            f'(size_t)({c_expr}), (size_t)({rust_value})); bad++; }}')


ALLOW_MISSING = False
MISSING_TYPE = r'check\.c:(\d+):\d+: error: (?:invalid use of undefined type|invalid application of .sizeof. to incomplete type|[^\n]*undeclared)'


def compile_dropping_unknown(lines, template, args, workdir):
    """Compiles, dropping checks of members C does not have; returns (ok, lines)."""
    for _ in range(16):
        body = '\n'.join(lines)
        path = os.path.join(workdir, 'check.c')
        with open(path, 'w') as f:
            f.write(PRELUDE + template.replace('CHECKS', body))
        first = (PRELUDE + template).split('\n').index('CHECKS') + 1
        r = subprocess.run(['gcc', '-w'] + args + [path], capture_output=True, text=True, cwd=workdir)
        if r.returncode == 0:
            return True, lines
        bad = {int(x) - first for x in re.findall(r'check\.c:(\d+):\d+: error: [^\n]* has no member named', r.stderr)}
        if ALLOW_MISSING:
            missing = {int(x) - first for x in re.findall(MISSING_TYPE, r.stderr)}
            for i in sorted(missing - bad):
                if 0 <= i < len(lines):
                    print('skipped (struct not in these headers):', lines[i].strip()[:120])
            bad |= missing
        if not bad:
            sys.stderr.write(r.stderr[:3000])
            return False, lines
        bad = {i for i in bad if 0 <= i < len(lines)}
        if not bad:
            sys.stderr.write(r.stderr[:3000])
            return False, lines
        for i in sorted(bad):
            print('skipped (no such C member):', lines[i].strip())
        if ALLOW_MISSING:
            # A struct that lacks members here is an older version of it:
            # its size differs by design, so its size check goes too.
            # (Rust-only explicit padding, `pad*`, says nothing of versions.)
            grown = {t for t, f in re.findall(r'"(\w+)\.(\w+)"', ''.join(lines[i] for i in bad))
                     if not re.fullmatch(r'_?pad\d*', f)}
            for j, l in enumerate(lines):
                if any(f'"{t} size"' in l for t in grown):
                    print(f'skipped (older struct version, size differs by design): {l.strip()[:100]}')
                    bad.add(j)
        lines = [l for j, l in enumerate(lines) if j not in bad]
    return False, lines


ENUM_NAMES = re.compile(r'^(XS_\w+|XenbusState\w+|HVMMEM_\w+)$')


def check_constants(inc, workdir):
    """Static-asserts each Rust integer constant against Xen's definition."""
    src = ''.join(open(f).read() for f in sorted(glob.glob(os.path.join(SRC, '**', '*.rs'), recursive=True)))
    consts = re.findall(r'pub const (\w+): (?:u8|u16|u32|u64|i16|i32|usize|Domid) = ([^;]+);', src)
    body, names = [], []
    for name, val in consts:
        v = val.strip().replace('u32::MAX', '0xffffffffLL')
        v = re.sub(r'\b(0x[0-9a-fA-F_]+|\d[\d_]*)\b', lambda m: m.group(1).replace('_', '') + 'LL', v)
        if not re.fullmatch(r'[\w<>()+\- *]+', v) or name == 'XS_DEBUG':
            continue
        if name == 'GNTMAP_guest_avail_mask':
            v = f'(uint32_t)({v})'
        if ENUM_NAMES.match(name):
            body.append(f'_Static_assert((long long)({name}) == ({v}), "{name}"); int ok_{name};')
        elif re.fullmatch(r'E[A-Z0-9]+', name):
            body.append(f'_Static_assert(XE_{name} == ({v}), "{name}"); int ok_{name};')
        else:
            body.append(f'#ifdef {name}\n_Static_assert((long long)({name}) == ({v}), "{name}");\nint ok_{name};\n#endif')
        names.append(name)
    headers = ['errno.h', 'elfnote.h', 'features.h', 'arch-x86/cpuid.h', 'hvm/e820.h', 'io/xenbus.h']
    pre = PRELUDE.replace('#include "xen.h"', '#include "xen.h"\n' + ''.join(f'#include "{h}"\n' for h in headers[1:]), 1)
    # errno.h hides two hypervisor-internal values unless __XEN__ is set;
    # set only for it, after the other headers (domctl.h's hvm/save.h wants
    # Xen's private headers under __XEN__).
    errno = '#define __XEN__ 1\nenum {\n#define XEN_ERRNO(n, v) XE_##n = v,\n#include "errno.h"\n};\n'
    path = os.path.join(workdir, 'consts.c')
    with open(path, 'w') as f:
        f.write(pre + errno + '\n'.join(body) + '\n')
    obj = os.path.join(workdir, 'consts.o')
    r = subprocess.run(['gcc', '-w', '-iquote', inc, '-c', '-o', obj, path], capture_output=True, text=True)
    # An older Xen lacks newer names (undeclared: skipped) and counts fewer
    # xenstore message types (XS_TYPE_COUNT: version-dependent, skipped).
    for _ in range(8):
        if r.returncode == 0 or not ALLOW_MISSING:
            break
        gone = set(re.findall(r"[‘'](\w+)[’'] undeclared", r.stderr)) | {'XS_TYPE_COUNT'}
        print('constants skipped (not in these headers):', ' '.join(sorted(gone)))
        body = [b for b in body if not any(re.search(rf'\b{g}\b', b) for g in gone)]
        with open(path, 'w') as f:
            f.write(pre + errno + '\n'.join(body) + '\n')
        r = subprocess.run(['gcc', '-w', '-iquote', inc, '-c', '-o', obj, path], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr[:4000], end='')
        print('constants: MISMATCH')
        return False
    syms = subprocess.run(['nm', obj], capture_output=True, text=True).stdout
    checked = set(re.findall(r'ok_(\w+)', syms))
    print(f'constants: {len(checked)} of {len(names)} checked against Xen, all match '
          f'(the rest are Rust-side or outside these headers)')
    return True


def main():
    global ALLOW_MISSING
    args = sys.argv[1:]
    if args[:1] == ['--allow-missing']:
        ALLOW_MISSING = True
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    inc = os.path.abspath(args[0])
    found = assertions()
    with tempfile.TemporaryDirectory() as d:
        ok64, l64 = compile_dropping_unknown(lines_for(found, False), RUNTIME, ['-iquote', inc, '-o', 'chk'], d)
        if not ok64:
            sys.exit('x86_64 check did not compile')
        run = subprocess.run([os.path.join(d, 'chk')], capture_output=True, text=True)
        print(run.stdout, end='')
        ok32, l32 = compile_dropping_unknown(lines_for(found, True), STATIC,
                                             ['-m32', '-ffreestanding', '-iquote', inc, '-c', '-o', 'chk32.o'], d)
        print(f'x86_32: {len(l32)} checks, {"all match" if ok32 else "MISMATCH"}')
        okc = check_constants(inc, d)
    sys.exit(0 if run.returncode == 0 and ok32 and okc else 1)


if __name__ == '__main__':
    main()
