/* ember: entry point. Placeholder until the VMM core lands: --help and --version. */
#include <stdio.h>
#include <string.h>

#define EMBER_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out, "usage: ember run --kernel PATH [options]\n"
                 "       ember --version | --help\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("ember %s\n", EMBER_VERSION);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 153;
}
