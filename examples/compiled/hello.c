/* The compiled example's program: built by gcc in a Debian stage, run in a busybox one. */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *who = argc > 1 ? argv[1] : "world";
    printf("hello, %s! (a static C binary, uid %d)\n", who, (int)getuid());
    return 0;
}
