/* stem-workbench: the GTK 4 desktop application (see ui/). */
#include "ui/stem-application.h"

int main(int argc, char **argv)
{
    return stem_application_run(argc, argv);
}
