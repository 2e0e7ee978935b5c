/* Freestanding <stdint.h> for the 32-bit potemkin guest runtime (built with -nostdinc). */
#ifndef POTEMKIN_STDINT_H
#define POTEMKIN_STDINT_H

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef int intptr_t;
typedef unsigned int uintptr_t;
typedef long long intmax_t;
typedef unsigned long long uintmax_t;

#define INT8_MIN (-128)
#define INT8_MAX 127
#define UINT8_MAX 0xffu
#define INT16_MIN (-32768)
#define INT16_MAX 32767
#define UINT16_MAX 0xffffu
#define INT32_MIN (-2147483647 - 1)
#define INT32_MAX 2147483647
#define UINT32_MAX 0xffffffffu
#define INT64_MIN (-9223372036854775807ll - 1)
#define INT64_MAX 9223372036854775807ll
#define UINT64_MAX 0xffffffffffffffffull
#define UINTPTR_MAX UINT32_MAX

#define UINT64_C(x) x##ull
#define INT64_C(x) x##ll
#define UINT32_C(x) x##u

#endif
