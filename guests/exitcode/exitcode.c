/* Exits with the status given as status=N on the command line (default 0). */
#include <potemkin/runtime.h>

int main(void) {
    int status = cmdline_int("status", 0);
    printf("exiting with %d\n", status);
    return status;
}
