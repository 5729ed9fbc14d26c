/* The stdlib's snapshot pickle, as pklread.c reads it and pklwrite.c
 * writes it, so that people can move between tracemalloc and
 * ctracemalloc.
 *
 * tracemalloc.Snapshot.dump pickles the Snapshot object. Its content:
 *
 *   Snapshot instance, state {'traces': T, 'traceback_limit': int, and
 *                             any attribute the user set}
 *   T: _Traces instance, state {'_traces': [raw trace, ...]}
 *   raw trace: (domain, size, ((filename, lineno), ...), total_nframe),
 *              frames most recent first
 *
 * and the pickle memoises each frame tuple, frames tuple and filename,
 * which the stdlib's tracer shares between traces.
 */
#ifndef CTM_PKLOPS_H
#define CTM_PKLOPS_H

/* The pickle opcodes used here (Lib/pickletools.py documents them). */
/* The pickle opcodes used here (Lib/pickletools.py documents them). */
enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1',
    OP_DUP = '2', OP_NONE = 'N', OP_BININT = 'J', OP_BININT1 = 'K',
    OP_BININT2 = 'M', OP_BINFLOAT = 'G', OP_BINUNICODE = 'X',
    OP_SHORT_BINBYTES = 'C', OP_BINBYTES = 'B', OP_EMPTY_TUPLE = ')',
    OP_TUPLE = 't', OP_EMPTY_LIST = ']', OP_APPEND = 'a', OP_APPENDS = 'e',
    OP_LIST = 'l', OP_EMPTY_DICT = '}', OP_SETITEM = 's', OP_SETITEMS = 'u',
    OP_DICT = 'd', OP_GLOBAL = 'c', OP_BUILD = 'b', OP_BINPUT = 'q',
    OP_LONG_BINPUT = 'r', OP_BINGET = 'h', OP_LONG_BINGET = 'j',
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86,
    OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89,
    OP_LONG1 = 0x8a, OP_LONG4 = 0x8b, OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e, OP_EMPTY_SET = 0x8f,
    OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_STACK_GLOBAL = 0x93,
    OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
};

#endif /* CTM_PKLOPS_H */
