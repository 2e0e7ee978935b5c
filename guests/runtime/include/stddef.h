/* Freestanding <stddef.h> for the 32-bit potemkin guest runtime. */
#ifndef POTEMKIN_STDDEF_H
#define POTEMKIN_STDDEF_H

typedef __SIZE_TYPE__ size_t;
typedef __PTRDIFF_TYPE__ ptrdiff_t;

#ifndef NULL
#define NULL ((void*)0)
#endif

#define offsetof(type, member) __builtin_offsetof(type, member)

#endif
