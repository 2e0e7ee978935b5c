#include <potemkin/cpu.h>
#include <potemkin/exit.h>
#include <potemkin/io.h>

void exit(int status) {
    outl(EXIT_PORT, (uint32_t)status);
    halt_forever();
}
